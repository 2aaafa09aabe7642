<?php
// Test users of the bundled IdP. Passwords are public: test only.
$config = [
    'admin' => ['core:AdminPassword'],
    'carers' => [
        'exampleauth:UserPass',
        'carer:carer-pass' => [
            'uid' => ['cj-4471'],
            'displayName' => ['Casey Jones'],
            'odsCode' => ['VNC12'],
            'role' => ['CH01'],
        ],
        'manager:manager-pass' => [
            'uid' => ['mp-1002'],
            'displayName' => ['Morgan Price'],
            'odsCode' => ['VNC12'],
            'role' => ['CH01', 'CH02'],
        ],
    ],
];
