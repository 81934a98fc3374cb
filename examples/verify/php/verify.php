<?php
/**
 * Command-line check of one identity JWT, with the same code an application requires.
 * 用应用里同一份代码，在命令行校验一个身份 JWT。
 *
 *     php verify.php <jwks-url-or-file> <expected-iss> <expected-aud> < token.txt
 *
 * Prints the identity as JSON and exits 0 when the token is valid; prints
 * "rejected: <reason>" on stderr and exits 1 otherwise (2: wrong usage).
 */

declare(strict_types=1);

require __DIR__ . '/wechat_jwt.php';

if ($argc !== 4) {
    fwrite(STDERR, "usage: php verify.php <jwks-url-or-file> <expected-iss> <expected-aud> < token\n");
    exit(2);
}
try {
    $identity = WeChatJwt::verify(
        trim((string) stream_get_contents(STDIN)),
        WeChatJwt::loadJwks($argv[1]),
        $argv[2],
        $argv[3]
    );
} catch (WeChatJwtError $e) {
    fwrite(STDERR, 'rejected: ' . $e->getMessage() . "\n");
    exit(1);
}
echo json_encode($identity, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES), "\n";
