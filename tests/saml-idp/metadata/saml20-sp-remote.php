<?php
// carebroker as the service provider. Its AuthnRequests are signed with certs/test/saml-sp.
$broker = getenv('CAREBROKER_URL');
$metadata[$broker . '/saml/metadata'] = [
    'AssertionConsumerService' => $broker . '/saml/acs',
    'SingleLogoutService' => $broker . '/saml/slo',
    'certificate' => 'saml-sp.crt.pem',
    'validate.authnrequest' => true,
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
];
