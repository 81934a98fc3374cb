/*
 * Verifies the identity JWT that wechat-oauth-proxy puts in the X-WeChat-Jwt header, with the
 * Java 17 standard library only (java.security Ed25519, java.net.http).
 * 只用 Java 17 标准库校验 wechat-oauth-proxy 放在 X-WeChat-Jwt 里的身份 JWT。
 *
 * In an application, copy this file (or its verify/loadJwks methods and the Json class):
 *
 *     Map<String, Object> jwks = WeChatJwtVerifier.loadJwks("http://127.0.0.1:8080/_wxauth/jwks.json");
 *     // at start-up; load it again now and then, or when verify throws UnknownKidException
 *     WeChatJwtVerifier.Identity user = WeChatJwtVerifier.verify(
 *         request.getHeader("X-WeChat-Jwt"), jwks,
 *         "wechat-oauth-proxy",   // [jwt] issuer
 *         "upstream",             // [jwt] audience: your app's name
 *         Instant.now());
 *
 * From the command line (token on stdin; prints the identity as JSON, or "rejected: <reason>" on
 * stderr and exit code 1; 2 for wrong usage). Java 11+ runs a single source file directly:
 *
 *     java WeChatJwtVerifier.java <jwks-url-or-file> <expected-iss> <expected-aud> < token.txt
 *
 * What is checked: the algorithm is pinned to EdDSA (Ed25519, the proxy's default
 * [jwt] algorithm; "none", HS256 and every other alg are refused), the key is chosen by the
 * token's kid from the JWKS (current and, during a rotation, previous key), the signature, iss
 * and aud exactly, exp (required), nbf and iat when present (60 s leeway), and sub = openid.
 *
 * About JSON: the JDK has no JSON parser, and this example wants no dependency. The Json class
 * below is a small strict RFC 8259 parser (objects, arrays, strings with every escape, numbers,
 * true/false/null; it refuses duplicate names, trailing text and nesting deeper than 16). It
 * reads only what the proxy sends — the JWKS, the JWT header and the claims — and the claims
 * are read only after the signature has been checked. If your application already has Jackson
 * or Gson, use that instead: replace Json.parseObject with your library's call.
 */

import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class WeChatJwtVerifier {
    /** The one algorithm accepted. */
    public static final String ALGORITHM = "EdDSA";
    /** Clock leeway for exp, nbf and iat, in seconds. */
    public static final long LEEWAY_SECONDS = 60;
    /** DER prefix of an X.509 SubjectPublicKeyInfo for a raw 32-byte Ed25519 key (RFC 8410). */
    private static final byte[] ED25519_SPKI_PREFIX = {
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
    };
    private static final Base64.Decoder B64URL = Base64.getUrlDecoder();

    private WeChatJwtVerifier() {}

    /** Why a token was refused or the JWKS could not be read. */
    public static class VerificationException extends Exception {
        private static final long serialVersionUID = 1L;

        public VerificationException(String reason) {
            super(reason);
        }
    }

    /** The JWKS has no key with the token's kid: load it again (a rotation may have happened). */
    public static final class UnknownKidException extends VerificationException {
        private static final long serialVersionUID = 1L;

        public UnknownKidException() {
            super("no key with this kid in the JWKS");
        }
    }

    /** What the upstream learns about the user; unionid is null when WeChat gave none. */
    public record Identity(String openid, String unionid, String nickname, String avatar, String appid) {
        /** The identity as a JSON object. */
        public String toJson() {
            return "{\"openid\":" + Json.quote(openid)
                + ",\"unionid\":" + (unionid == null ? "null" : Json.quote(unionid))
                + ",\"nickname\":" + Json.quote(nickname)
                + ",\"avatar\":" + Json.quote(avatar)
                + ",\"appid\":" + Json.quote(appid) + "}";
        }
    }

    /** Reads the JWKS from an http(s) URL (5 s timeouts, no redirects) or a file. */
    public static Map<String, Object> loadJwks(String source) throws VerificationException {
        String text;
        try {
            String lower = source.toLowerCase(java.util.Locale.ROOT);
            if (lower.startsWith("http://") || lower.startsWith("https://")) {
                HttpClient client = HttpClient.newBuilder()
                    .connectTimeout(Duration.ofSeconds(5))
                    .followRedirects(HttpClient.Redirect.NEVER)
                    .build();
                HttpRequest request = HttpRequest.newBuilder(URI.create(source))
                    .timeout(Duration.ofSeconds(5))
                    .build();
                HttpResponse<String> response =
                    client.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
                if (response.statusCode() != 200) {
                    throw new VerificationException("cannot load the JWKS: HTTP " + response.statusCode());
                }
                text = response.body();
            } else {
                text = Files.readString(Path.of(source), StandardCharsets.UTF_8);
            }
        } catch (IOException | IllegalArgumentException e) {
            throw new VerificationException("cannot load the JWKS: " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new VerificationException("cannot load the JWKS: interrupted");
        }
        Map<String, Object> jwks = Json.parseObject(text, "JWKS");
        if (!(jwks.get("keys") instanceof List)) {
            throw new VerificationException("the JWKS is not a {\"keys\": [...]} document");
        }
        return jwks;
    }

    /** Verifies a compact JWS token against the JWKS and returns the identity it carries. */
    public static Identity verify(String token, Map<String, Object> jwks, String issuer, String audience, Instant now)
            throws VerificationException {
        String[] parts = token.split("\\.", -1);
        if (parts.length != 3) {
            throw new VerificationException("not a compact JWS (three dot-separated parts)");
        }
        Map<String, Object> header = Json.parseObject(utf8(decode(parts[0], "header")), "header");
        Object alg = header.get("alg");
        if (!ALGORITHM.equals(alg)) {
            throw new VerificationException("alg " + (alg instanceof String s ? Json.quote(s) : String.valueOf(alg))
                + " is not allowed (only " + ALGORITHM + ")");
        }
        if (header.containsKey("crit")) {
            throw new VerificationException("crit header parameters are not supported");
        }
        if (!(header.get("kid") instanceof String kid)) {
            throw new VerificationException("the token has no kid");
        }
        PublicKey key = findKey(jwks, kid);

        byte[] signature = decode(parts[2], "signature");
        boolean valid;
        try {
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(key);
            verifier.update((parts[0] + "." + parts[1]).getBytes(StandardCharsets.US_ASCII));
            valid = signature.length == 64 && verifier.verify(signature);
        } catch (GeneralSecurityException e) {
            valid = false;
        }
        if (!valid) {
            throw new VerificationException("bad signature");
        }

        // Only now, with a valid signature, are the claims worth reading.
        Map<String, Object> claims = Json.parseObject(utf8(decode(parts[1], "payload")), "payload");
        if (!issuer.equals(claims.get("iss"))) {
            throw new VerificationException("iss is not " + Json.quote(issuer));
        }
        Object aud = claims.get("aud");
        if (!(audience.equals(aud) || (aud instanceof List<?> list && list.contains(audience)))) {
            throw new VerificationException("aud does not name " + Json.quote(audience));
        }
        long unix = now.getEpochSecond();
        Long exp = claim(claims, "exp", Long.class);
        if (exp == null) {
            throw new VerificationException("exp is missing");
        }
        if (unix >= exp + LEEWAY_SECONDS) {
            throw new VerificationException("expired (exp is in the past)");
        }
        for (String name : new String[] {"nbf", "iat"}) {
            Long value = claim(claims, name, Long.class);
            if (value != null && value > unix + LEEWAY_SECONDS) {
                throw new VerificationException(name + " is in the future");
            }
        }
        String sub = claim(claims, "sub", String.class);
        if (sub == null || sub.isEmpty()) {
            throw new VerificationException("sub (the openid) is missing");
        }
        if (claims.containsKey("openid") && !sub.equals(claims.get("openid"))) {
            throw new VerificationException("openid and sub differ");
        }
        return new Identity(sub, claim(claims, "unionid", String.class), orEmpty(claim(claims, "nickname", String.class)),
            orEmpty(claim(claims, "avatar", String.class)), orEmpty(claim(claims, "appid", String.class)));
    }

    /** The Ed25519 public key with this kid. */
    private static PublicKey findKey(Map<String, Object> jwks, String kid) throws VerificationException {
        Object keys = jwks.get("keys");
        if (keys instanceof List<?> list) {
            for (Object item : list) {
                if (!(item instanceof Map<?, ?> jwk) || !kid.equals(jwk.get("kid"))) {
                    continue;
                }
                boolean usable = "OKP".equals(jwk.get("kty")) && "Ed25519".equals(jwk.get("crv"))
                    && (jwk.get("alg") == null || ALGORITHM.equals(jwk.get("alg")))
                    && (jwk.get("use") == null || "sig".equals(jwk.get("use")))
                    && jwk.get("x") instanceof String;
                if (!usable) {
                    throw new VerificationException("the key with this kid is not an Ed25519 signing key");
                }
                byte[] x = decode((String) jwk.get("x"), "JWK x");
                if (x.length != 32) {
                    throw new VerificationException("the key with this kid is not 32 bytes long");
                }
                byte[] spki = new byte[ED25519_SPKI_PREFIX.length + 32];
                System.arraycopy(ED25519_SPKI_PREFIX, 0, spki, 0, ED25519_SPKI_PREFIX.length);
                System.arraycopy(x, 0, spki, ED25519_SPKI_PREFIX.length, 32);
                try {
                    return KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(spki));
                } catch (GeneralSecurityException e) {
                    throw new VerificationException("the key with this kid cannot be loaded");
                }
            }
        }
        throw new UnknownKidException();
    }

    /** Strict base64url without padding. */
    private static byte[] decode(String text, String what) throws VerificationException {
        if (text.isEmpty() || !text.matches("[A-Za-z0-9_-]+")) {
            throw new VerificationException(what + " is not base64url");
        }
        try {
            return B64URL.decode(text);
        } catch (IllegalArgumentException e) {
            throw new VerificationException(what + " is not base64url");
        }
    }

    private static String utf8(byte[] bytes) throws VerificationException {
        try {
            return StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(bytes)).toString();
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new VerificationException("not UTF-8");
        }
    }

    /** The claim `name` when it is present and of `type`; null when absent or JSON null. */
    private static <T> T claim(Map<String, Object> claims, String name, Class<T> type)
            throws VerificationException {
        Object value = claims.get(name);
        if (value == null) {
            return null;
        }
        if (!type.isInstance(value)) {
            throw new VerificationException(name + " is not " + (type == Long.class ? "an integer" : "a string"));
        }
        return type.cast(value);
    }

    private static String orEmpty(String value) {
        return value == null ? "" : value;
    }

    /**
     * A small strict JSON parser (RFC 8259): objects become LinkedHashMap, arrays ArrayList,
     * strings String, integers that fit Long, other numbers BigDecimal, true/false Boolean, null
     * null. Refuses duplicate names, trailing text, and nesting deeper than MAX_DEPTH.
     */
    static final class Json {
        private static final int MAX_DEPTH = 16;
        private final String text;
        private int pos;

        private Json(String text) {
            this.text = text;
        }

        /** Parses `text`, which must be one JSON object. */
        static Map<String, Object> parseObject(String text, String what) throws VerificationException {
            Json parser = new Json(text);
            Object value;
            try {
                value = parser.value(0);
                parser.space();
                if (parser.pos != text.length()) {
                    throw parser.error("trailing text");
                }
            } catch (VerificationException e) {
                throw new VerificationException(what + " is not valid JSON: " + e.getMessage());
            }
            if (!(value instanceof Map)) {
                throw new VerificationException(what + " is not a JSON object");
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> object = (Map<String, Object>) value;
            return object;
        }

        /** `value` as a JSON string literal. */
        static String quote(String value) {
            StringBuilder out = new StringBuilder("\"");
            for (int i = 0; i < value.length(); i++) {
                char c = value.charAt(i);
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            return out.append('"').toString();
        }

        private VerificationException error(String message) {
            return new VerificationException(message + " at offset " + pos);
        }

        private void space() {
            while (pos < text.length() && " \t\n\r".indexOf(text.charAt(pos)) >= 0) {
                pos++;
            }
        }

        private Object value(int depth) throws VerificationException {
            if (depth > MAX_DEPTH) {
                throw error("nested too deeply");
            }
            space();
            if (pos >= text.length()) {
                throw error("unexpected end");
            }
            char c = text.charAt(pos);
            if (c == '{') {
                return object(depth);
            } else if (c == '[') {
                return array(depth);
            } else if (c == '"') {
                return string();
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                return number();
            } else if (text.startsWith("true", pos)) {
                pos += 4;
                return Boolean.TRUE;
            } else if (text.startsWith("false", pos)) {
                pos += 5;
                return Boolean.FALSE;
            } else if (text.startsWith("null", pos)) {
                pos += 4;
                return null;
            }
            throw error("unexpected character");
        }

        private Map<String, Object> object(int depth) throws VerificationException {
            Map<String, Object> map = new LinkedHashMap<>();
            pos++; // '{'
            space();
            if (accept('}')) {
                return map;
            }
            do {
                space();
                if (pos >= text.length() || text.charAt(pos) != '"') {
                    throw error("expected a member name");
                }
                String name = string();
                if (map.containsKey(name)) {
                    throw error("duplicate member " + quote(name));
                }
                space();
                expect(':');
                map.put(name, value(depth + 1));
                space();
            } while (accept(','));
            expect('}');
            return map;
        }

        private List<Object> array(int depth) throws VerificationException {
            List<Object> list = new ArrayList<>();
            pos++; // '['
            space();
            if (accept(']')) {
                return list;
            }
            do {
                list.add(value(depth + 1));
                space();
            } while (accept(','));
            expect(']');
            return list;
        }

        /** Consumes `c` if it comes next. */
        private boolean accept(char c) {
            if (pos < text.length() && text.charAt(pos) == c) {
                pos++;
                return true;
            }
            return false;
        }

        private void expect(char c) throws VerificationException {
            if (!accept(c)) {
                throw error("expected '" + c + "'");
            }
        }

        private String string() throws VerificationException {
            StringBuilder out = new StringBuilder();
            pos++; // '"'
            while (true) {
                if (pos >= text.length()) {
                    throw error("unterminated string");
                }
                char c = text.charAt(pos++);
                if (c == '"') {
                    return out.toString();
                } else if (c < 0x20) {
                    throw error("control character in a string");
                } else if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (pos >= text.length()) {
                    throw error("unterminated escape");
                }
                char e = text.charAt(pos++);
                switch (e) {
                    case '"', '\\', '/' -> out.append(e);
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> {
                        if (pos + 4 > text.length()) {
                            throw error("short \\u escape");
                        }
                        String hex = text.substring(pos, pos + 4);
                        if (!hex.matches("[0-9A-Fa-f]{4}")) {
                            throw error("bad \\u escape");
                        }
                        out.append((char) Integer.parseInt(hex, 16));
                        pos += 4;
                    }
                    default -> throw error("bad escape");
                }
            }
        }

        private Object number() throws VerificationException {
            int start = pos;
            if (text.charAt(pos) == '-') {
                pos++;
            }
            if (pos < text.length() && text.charAt(pos) == '0') {
                pos++;
            } else if (!digits()) {
                throw error("bad number");
            }
            boolean integral = true;
            if (pos < text.length() && text.charAt(pos) == '.') {
                pos++;
                integral = false;
                if (!digits()) {
                    throw error("bad number");
                }
            }
            if (pos < text.length() && (text.charAt(pos) == 'e' || text.charAt(pos) == 'E')) {
                pos++;
                integral = false;
                if (pos < text.length() && (text.charAt(pos) == '+' || text.charAt(pos) == '-')) {
                    pos++;
                }
                if (!digits()) {
                    throw error("bad number");
                }
            }
            String literal = text.substring(start, pos);
            if (integral) {
                BigInteger value = new BigInteger(literal);
                if (value.bitLength() < 64) {
                    return value.longValue();
                }
            }
            return new BigDecimal(literal);
        }

        private boolean digits() {
            int start = pos;
            while (pos < text.length() && text.charAt(pos) >= '0' && text.charAt(pos) <= '9') {
                pos++;
            }
            return pos > start;
        }
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 3) {
            System.err.println("usage: java WeChatJwtVerifier.java <jwks-url-or-file> <expected-iss> <expected-aud> < token");
            System.exit(2);
        }
        String token = new String(System.in.readAllBytes(), StandardCharsets.UTF_8).strip();
        try {
            Identity identity = verify(token, loadJwks(args[0]), args[1], args[2], Instant.now());
            System.out.write((identity.toJson() + "\n").getBytes(StandardCharsets.UTF_8));
            System.out.flush();
        } catch (VerificationException e) {
            System.err.println("rejected: " + e.getMessage());
            System.exit(1);
        }
    }
}
