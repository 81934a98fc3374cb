<?php
/**
 * Verifies the identity JWT that wechat-oauth-proxy puts in the `X-WeChat-Jwt` header.
 * 校验 wechat-oauth-proxy 放在 `X-WeChat-Jwt` 请求头里的身份 JWT。
 *
 * Needs PHP 7.2+ with its bundled sodium and json extensions; no Composer, no other library.
 * Copy this one file into your application and `require` it.
 *
 *     require __DIR__ . '/wechat_jwt.php';
 *     $user = WeChatJwt::verifyRequest(
 *         $_SERVER['HTTP_X_WECHAT_JWT'] ?? '',
 *         'http://127.0.0.1:8080/_wxauth/jwks.json',   // the proxy's JWKS
 *         'wechat-oauth-proxy',                        // [jwt] issuer
 *         'upstream'                                   // [jwt] audience: your app's name
 *     );
 *     echo htmlspecialchars($user['nickname'], ENT_QUOTES, 'UTF-8');
 *
 * What is checked, and why:
 * - the algorithm is pinned to EdDSA (Ed25519, the proxy's default `[jwt] algorithm`): the
 *   token's own `alg` is compared with it and never chosen from — `none`, HS256 and everything
 *   else are refused;
 * - the key is picked by the token's `kid` from the proxy's JWKS, which lists the current key and,
 *   during a rotation, the previous one; an unknown `kid` makes verifyRequest() fetch the JWKS
 *   again (at most once per minute) before giving up;
 * - the signature (sodium_crypto_sign_verify_detached), then `iss` and `aud` exactly, `exp`
 *   (required), `nbf` and `iat` (when present), with 60 seconds of clock leeway;
 * - `sub` is the openid; an `openid` claim must agree with it.
 *
 * Everything else in the token is ignored. Failures throw WeChatJwtError with a reason that
 * never contains the token. Other algorithms (`ES256`, `RS256`) need a JOSE library; this file
 * only does what PHP can do on its own.
 */

declare(strict_types=1);

/** Why a token was refused or the JWKS could not be read. */
final class WeChatJwtError extends RuntimeException
{
    /** The token names a `kid` the JWKS does not list (a rotation may have happened). */
    const UNKNOWN_KID = 1;
}

final class WeChatJwt
{
    /** The one algorithm accepted (the proxy's default `[jwt] algorithm`). */
    const ALGORITHM = 'EdDSA';
    /** Clock leeway for `exp`, `nbf` and `iat`, in seconds. */
    const LEEWAY = 60;
    /** Timeout of a JWKS download, in seconds. */
    const FETCH_TIMEOUT = 5;
    /** How long a downloaded JWKS is used before it is fetched again, in seconds. */
    const CACHE_TTL = 300;
    /** Minimum age of the cached JWKS before an unknown `kid` fetches it again, in seconds. */
    const REFETCH_AFTER = 60;

    /**
     * Verifies `$token` with the JWKS at `$jwksUrl`, cached in a file (default: in the system
     * temp directory) for CACHE_TTL seconds. Returns the identity (see verify()).
     *
     * @throws WeChatJwtError
     */
    public static function verifyRequest(
        string $token,
        string $jwksUrl,
        string $issuer,
        string $audience,
        ?string $cacheFile = null
    ): array {
        if ($cacheFile === null) {
            $cacheFile = sys_get_temp_dir() . '/wechat-jwks-' . hash('sha256', $jwksUrl) . '.json';
        }
        list($jwks, $age) = self::cachedJwks($jwksUrl, $cacheFile);
        try {
            return self::verify($token, $jwks, $issuer, $audience);
        } catch (WeChatJwtError $e) {
            if ($e->getCode() !== WeChatJwtError::UNKNOWN_KID || $age < self::REFETCH_AFTER) {
                throw $e;
            }
        }
        // A new key may have been published since the cache was filled.
        $jwks = self::loadJwks($jwksUrl);
        self::writeCache($cacheFile, $jwks);
        return self::verify($token, $jwks, $issuer, $audience);
    }

    /**
     * Reads a JWKS document from an http(s) URL or a file and decodes it.
     *
     * @throws WeChatJwtError
     */
    public static function loadJwks(string $source): array
    {
        if (preg_match('#^https?://#i', $source) === 1) {
            $context = stream_context_create(array(
                'http' => array('timeout' => self::FETCH_TIMEOUT, 'follow_location' => 0),
            ));
            $text = @file_get_contents($source, false, $context);
        } else {
            $text = @file_get_contents($source);
        }
        if ($text === false) {
            throw new WeChatJwtError('cannot load the JWKS from ' . $source);
        }
        $jwks = json_decode($text, true, 16);
        if (!is_array($jwks) || !isset($jwks['keys']) || !is_array($jwks['keys'])) {
            throw new WeChatJwtError('the JWKS is not a {"keys": [...]} document');
        }
        return $jwks;
    }

    /**
     * Verifies a compact JWS token against a decoded JWKS and returns the identity:
     * `openid`, `unionid` (null when WeChat gave none), `nickname`, `avatar`, `appid`.
     *
     * @throws WeChatJwtError
     */
    public static function verify(
        string $token,
        array $jwks,
        string $issuer,
        string $audience,
        ?int $now = null
    ): array {
        $now = $now === null ? time() : $now;
        $parts = explode('.', $token);
        if (count($parts) !== 3) {
            throw new WeChatJwtError('not a compact JWS (three dot-separated parts)');
        }
        list($headerPart, $payloadPart, $signaturePart) = $parts;

        $header = self::decodeJson($headerPart, 'header');
        $alg = isset($header['alg']) ? $header['alg'] : null;
        if ($alg !== self::ALGORITHM) {
            throw new WeChatJwtError('alg ' . json_encode($alg) . ' is not allowed (only ' . self::ALGORITHM . ')');
        }
        if (isset($header['crit'])) {
            throw new WeChatJwtError('crit header parameters are not supported');
        }
        if (!isset($header['kid']) || !is_string($header['kid'])) {
            throw new WeChatJwtError('the token has no kid');
        }
        $publicKey = self::findKey($jwks, $header['kid']);

        $signature = self::base64UrlDecode($signaturePart, 'signature');
        if (strlen($signature) !== SODIUM_CRYPTO_SIGN_BYTES
            || !sodium_crypto_sign_verify_detached($signature, $headerPart . '.' . $payloadPart, $publicKey)
        ) {
            throw new WeChatJwtError('bad signature');
        }

        // Only now, with a valid signature, are the claims worth reading.
        $claims = self::decodeJson($payloadPart, 'payload');
        if (!isset($claims['iss']) || $claims['iss'] !== $issuer) {
            throw new WeChatJwtError('iss is not ' . json_encode($issuer));
        }
        $aud = isset($claims['aud']) ? $claims['aud'] : null;
        if (!($aud === $audience || (is_array($aud) && in_array($audience, $aud, true)))) {
            throw new WeChatJwtError('aud does not name ' . json_encode($audience));
        }
        if (!isset($claims['exp']) || !is_int($claims['exp'])) {
            throw new WeChatJwtError('exp is missing or not an integer');
        }
        if ($now >= $claims['exp'] + self::LEEWAY) {
            throw new WeChatJwtError('expired (exp is in the past)');
        }
        foreach (array('nbf', 'iat') as $name) {
            if (!array_key_exists($name, $claims)) {
                continue;
            }
            if (!is_int($claims[$name])) {
                throw new WeChatJwtError($name . ' is not an integer');
            }
            if ($claims[$name] > $now + self::LEEWAY) {
                throw new WeChatJwtError($name . ' is in the future');
            }
        }
        if (!isset($claims['sub']) || !is_string($claims['sub']) || $claims['sub'] === '') {
            throw new WeChatJwtError('sub (the openid) is missing');
        }
        if (array_key_exists('openid', $claims) && $claims['openid'] !== $claims['sub']) {
            throw new WeChatJwtError('openid and sub differ');
        }
        return array(
            'openid' => $claims['sub'],
            'unionid' => self::optionalString($claims, 'unionid'),
            'nickname' => (string) self::optionalString($claims, 'nickname'),
            'avatar' => (string) self::optionalString($claims, 'avatar'),
            'appid' => (string) self::optionalString($claims, 'appid'),
        );
    }

    /** The raw 32-byte Ed25519 public key with `$kid`. */
    private static function findKey(array $jwks, string $kid): string
    {
        $keys = isset($jwks['keys']) && is_array($jwks['keys']) ? $jwks['keys'] : array();
        foreach ($keys as $jwk) {
            if (!is_array($jwk) || !isset($jwk['kid']) || $jwk['kid'] !== $kid) {
                continue;
            }
            $usable = (isset($jwk['kty']) && $jwk['kty'] === 'OKP')
                && (isset($jwk['crv']) && $jwk['crv'] === 'Ed25519')
                && (!isset($jwk['alg']) || $jwk['alg'] === self::ALGORITHM)
                && (!isset($jwk['use']) || $jwk['use'] === 'sig')
                && isset($jwk['x']) && is_string($jwk['x']);
            if (!$usable) {
                throw new WeChatJwtError('the key with this kid is not an Ed25519 signing key');
            }
            $x = self::base64UrlDecode($jwk['x'], 'JWK x');
            if (strlen($x) !== SODIUM_CRYPTO_SIGN_PUBLICKEYBYTES) {
                throw new WeChatJwtError('the key with this kid is not 32 bytes long');
            }
            return $x;
        }
        throw new WeChatJwtError('no key with this kid in the JWKS', WeChatJwtError::UNKNOWN_KID);
    }

    /** Strict base64url without padding. */
    private static function base64UrlDecode(string $text, string $what): string
    {
        if (preg_match('/^[A-Za-z0-9_-]+$/', $text) !== 1) {
            throw new WeChatJwtError($what . ' is not base64url');
        }
        $bytes = base64_decode(strtr($text, '-_', '+/'), true);
        if ($bytes === false) {
            throw new WeChatJwtError($what . ' is not base64url');
        }
        return $bytes;
    }

    /** A base64url segment holding a JSON object. */
    private static function decodeJson(string $segment, string $what): array
    {
        $value = json_decode(self::base64UrlDecode($segment, $what), true, 16);
        if (!is_array($value) || (count($value) > 0 && array_keys($value) === range(0, count($value) - 1))) {
            throw new WeChatJwtError($what . ' is not a JSON object');
        }
        return $value;
    }

    private static function optionalString(array $claims, string $name): ?string
    {
        if (!isset($claims[$name])) {
            return null;
        }
        if (!is_string($claims[$name])) {
            throw new WeChatJwtError($name . ' is not a string');
        }
        return $claims[$name];
    }

    /** The JWKS from the cache file when fresh, else downloaded; and its age in seconds. */
    private static function cachedJwks(string $url, string $cacheFile): array
    {
        $mtime = @filemtime($cacheFile);
        if ($mtime !== false && time() - $mtime < self::CACHE_TTL) {
            $jwks = json_decode((string) @file_get_contents($cacheFile), true, 16);
            if (is_array($jwks) && isset($jwks['keys']) && is_array($jwks['keys'])) {
                return array($jwks, time() - $mtime);
            }
        }
        $jwks = self::loadJwks($url);
        self::writeCache($cacheFile, $jwks);
        return array($jwks, 0);
    }

    /** Atomic replace, so that a concurrent request never reads half a file. */
    private static function writeCache(string $cacheFile, array $jwks): void
    {
        $tmp = $cacheFile . '.' . bin2hex(random_bytes(6));
        if (@file_put_contents($tmp, json_encode($jwks)) !== false) {
            @rename($tmp, $cacheFile);
        }
        @unlink($tmp);
    }
}
