<?php
// SimpleSAMLphp (Debian's `simplesamlphp`) as the SAML IdP of the test suite and of
// scripts/run-with-idps.sh. Started by tests/saml-idp/serve.sh with PHP's built-in server; every
// path and URL comes from the environment that script sets.
$state = getenv('SAML_IDP_STATE');
$config = [
    'baseurlpath' => getenv('SAML_IDP_URL') . '/',
    'certdir' => getenv('CAREBROKER_CERTS') . '/',
    'metadatadir' => __DIR__ . '/../metadata/',
    'loggingdir' => $state . '/log/',
    'datadir' => $state . '/data/',
    'tempdir' => $state . '/tmp',
    'secretsalt' => 'carebroker-test-salt-not-a-secret',
    'auth.adminpassword' => 'carebroker-test-admin',
    'admin.protectindexpage' => true,
    'admin.protectmetadata' => false,
    'technicalcontact_name' => 'carebroker tests',
    'technicalcontact_email' => 'tests@carebroker.invalid',
    'timezone' => 'UTC',
    'logging.level' => SimpleSAML\Logger::NOTICE,
    'logging.handler' => 'stderr',
    'enable.saml20-idp' => true,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => true],
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'session.phpsession.savepath' => $state . '/sessions',
    'store.type' => 'phpsession',
    'language.default' => 'en',
    'theme.use' => 'default',
];
