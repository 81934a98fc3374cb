// Verifies the identity JWT that wechat-oauth-proxy puts in the `X-WeChat-Jwt` header, with
// `jose` (npm install jose). 用 jose 校验 wechat-oauth-proxy 放在 X-WeChat-Jwt 里的身份 JWT。
//
// In an application (Express shown; any framework reads the header the same way):
//
//   const { jwksFrom, verifyWeChatJwt } = require('./verify.js');
//   const keys = jwksFrom('http://127.0.0.1:8080/_wxauth/jwks.json'); // once, at start-up
//   app.use(async (req, res, next) => {
//     try {
//       req.wechat = await verifyWeChatJwt(req.get('x-wechat-jwt') || '', keys, {
//         issuer: 'wechat-oauth-proxy', // [jwt] issuer
//         audience: 'upstream',         // [jwt] audience: your app's name
//       });
//       next();
//     } catch (err) {
//       res.status(401).send('not signed in');
//     }
//   });
//
// From the command line (token on stdin; prints the identity as JSON, or "rejected: <reason>" on
// stderr and exit code 1; 2 for wrong usage):
//
//   node verify.js <jwks-url-or-file> <expected-iss> <expected-aud> < token.txt
//
// What is checked: the algorithm is pinned to EdDSA (Ed25519, the proxy's default
// `[jwt] algorithm`; `none`, HS256 and every other `alg` are refused), the key is chosen by the
// token's `kid` from the JWKS (current and, during a rotation, previous key; a remote JWKS is
// cached and fetched again when an unknown `kid` shows up), the signature, `iss` and `aud`
// exactly, `exp` (required), `nbf` and `iat` when present (60 s leeway), and `sub` = openid.
//
// jose 6 is an ES module; `require('jose')` works on Node.js 20.19+ and 22.12+. In an ES module
// application write `import { ... } from 'jose'` instead.
'use strict';

const fs = require('node:fs');
const { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify } = require('jose');

/** The one algorithm accepted. */
const ALGORITHMS = ['EdDSA'];
/** Clock leeway for exp, nbf and iat, in seconds. */
const LEEWAY_SECONDS = 60;

/** A key set from an http(s) URL (fetched lazily, cached, re-fetched on an unknown kid) or a file. */
function jwksFrom(source) {
  if (/^https?:\/\//i.test(source)) {
    return createRemoteJWKSet(new URL(source), { timeoutDuration: 5000 });
  }
  return createLocalJWKSet(JSON.parse(fs.readFileSync(source, 'utf8')));
}

/**
 * Verifies `token` and returns { openid, unionid, nickname, avatar, appid } (unionid is null
 * when WeChat gave none). Throws on any problem.
 */
async function verifyWeChatJwt(token, keys, { issuer, audience }) {
  const header = decodeProtectedHeader(token);
  if (typeof header.kid !== 'string') {
    throw new Error('the token has no kid');
  }
  const { payload } = await jwtVerify(token, keys, {
    algorithms: ALGORITHMS,
    issuer,
    audience,
    clockTolerance: LEEWAY_SECONDS,
    requiredClaims: ['exp', 'sub'],
  });
  // jose checks only the type of iat; a token issued in the future is refused here.
  if (payload.iat !== undefined && payload.iat > Date.now() / 1000 + LEEWAY_SECONDS) {
    throw new Error('"iat" is in the future');
  }
  if (payload.openid !== undefined && payload.openid !== payload.sub) {
    throw new Error('openid and sub differ');
  }
  const text = (name) => {
    const value = payload[name];
    if (value === undefined || value === null) return null;
    if (typeof value !== 'string') throw new Error(`${name} is not a string`);
    return value;
  };
  return {
    openid: payload.sub,
    unionid: text('unionid'),
    nickname: text('nickname') ?? '',
    avatar: text('avatar') ?? '',
    appid: text('appid') ?? '',
  };
}

async function main(argv) {
  if (argv.length !== 3) {
    process.stderr.write('usage: node verify.js <jwks-url-or-file> <expected-iss> <expected-aud> < token\n');
    return 2;
  }
  const [source, issuer, audience] = argv;
  try {
    const token = fs.readFileSync(0, 'utf8').trim();
    const identity = await verifyWeChatJwt(token, jwksFrom(source), { issuer, audience });
    process.stdout.write(`${JSON.stringify(identity)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`rejected: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
    return 1;
  }
}

module.exports = { jwksFrom, verifyWeChatJwt };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
