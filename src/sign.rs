//! `SDK-HMAC-SHA256` request signing, the scheme of the vendor's SDKs.
//!
//! One implementation serves the server (verification), the CLI and the agent (signing), so
//! both sides can never drift apart. The canonical request is built exactly as the official
//! SDK builds it: see the wire contract, section 6.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The `Authorization` scheme this module signs and verifies.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The SDK's derived-key scheme, verified too: the signing key is derived from the secret
/// key for one day, region and service (the credential's scope).
pub const DERIVED_ALGORITHM: &str = "V11-HMAC-SHA256";
/// Format of the `X-Sdk-Date` header, always UTC.
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// Name of the date header.
pub const DATE_HEADER: &str = "x-sdk-date";
/// The header in which a request may declare its body's hash.
const CONTENT_SHA256_HEADER: &str = "x-sdk-content-sha256";
/// Hex SHA-256 of the empty string, the payload hash of a request without a body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986 unreserved characters stay, everything else is `%XX` (upper-case hex).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `bytes` the way the SDK encodes path segments and query parts.
pub fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, UNRESERVED).to_string()
}

/// Appends `bytes` percent-encoded as [`encode`] encodes them.
fn push_encoded(out: &mut String, bytes: &[u8]) {
    out.extend(percent_encode(bytes, UNRESERVED));
}

/// The canonical URI: the path decoded, split on `/`, each segment re-encoded, ending in `/`.
pub fn canonical_uri(raw_path: &str) -> String {
    let decoded: Cow<'_, [u8]> = percent_decode_str(raw_path).into();
    let mut out = String::with_capacity(decoded.len() + 8);
    for (i, segment) in decoded.split(|b| *b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_encoded(&mut out, segment);
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// A percent-decoded part of a query: borrowed when nothing was encoded.
type Decoded<'a> = Cow<'a, [u8]>;

/// The canonical query string, rebuilt from a raw query: pairs decoded (a `+` stays a `+`),
/// sorted by key then value, re-encoded and joined with `&`.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(Decoded<'_>, Decoded<'_>)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode_str(k).into(), percent_decode_str(v).into())
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 8);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(&mut out, k);
        out.push('=');
        push_encoded(&mut out, v);
    }
    out
}

/// Builds the query string a client sends for `pairs`; it is its own canonical form.
pub fn query_string<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let raw = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                encode(k.as_ref().as_bytes()),
                encode(v.as_ref().as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    canonical_query(&raw)
}

/// Hex SHA-256 of a payload.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a canonical request is built from. Header values are looked up by lower-case name.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path exactly as sent (percent-encoded, no query).
    pub path: &'a str,
    /// The raw query without `?`, `""` when there is none.
    pub query: &'a str,
    /// Headers as `(name, value)`; names are compared case-insensitively.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Owned `(name, value)` headers as [`RequestParts`] takes them.
pub fn borrowed_headers(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

impl RequestParts<'_> {
    fn header(&self, lower_name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| *v)
    }
}

/// The canonical request over the given signed headers (lower-case, sorted).
pub fn canonical_request(parts: &RequestParts<'_>, signed_headers: &[String]) -> String {
    let mut headers = String::new();
    for name in signed_headers {
        headers.push_str(name);
        headers.push(':');
        headers.push_str(parts.header(name).unwrap_or("").trim());
        headers.push('\n');
    }
    let payload = match parts.header(CONTENT_SHA256_HEADER) {
        Some(v) if !parts.body.is_empty() => v.to_string(),
        _ if parts.body.is_empty() => EMPTY_BODY_SHA256.to_string(),
        _ => sha256_hex(parts.body),
    };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method.to_ascii_uppercase(),
        canonical_uri(parts.path),
        canonical_query(parts.query),
        headers,
        signed_headers.join(";"),
        payload
    )
}

/// The string to sign for a canonical request made at `sdk_date` (`X-Sdk-Date` value).
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// HMAC-SHA256 of `message` under `secret`.
fn mac(secret: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The derived-key signature: the string to sign carries the scope, and the key is the
/// lower-case hex of HKDF-SHA256(secret key, salt = access key, info = scope), as ASCII.
pub fn derived_signature(
    secret_key: &str,
    access_key: &str,
    scope: &str,
    sdk_date: &str,
    canonical_request: &str,
) -> String {
    hex::encode(derived_mac(
        secret_key,
        access_key,
        scope,
        sdk_date,
        canonical_request,
    ))
}

/// The derived-key signature's bytes (see [`derived_signature`]).
fn derived_mac(
    secret_key: &str,
    access_key: &str,
    scope: &str,
    sdk_date: &str,
    canonical_request: &str,
) -> [u8; 32] {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(access_key.as_bytes()), secret_key.as_bytes())
        .expand(scope.as_bytes(), &mut okm)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
    let string_to_sign = format!(
        "{DERIVED_ALGORITHM}\n{sdk_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    mac(hex::encode(okm).as_bytes(), string_to_sign.as_bytes())
}

/// Lower-case hex HMAC-SHA256 signature of a string to sign.
pub fn signature(secret_key: &str, string_to_sign: &str) -> String {
    hex::encode(mac(secret_key.as_bytes(), string_to_sign.as_bytes()))
}

/// A parsed `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `YYYYMMDD/region/service` of a derived-key (`V11-HMAC-SHA256`) signature.
    pub scope: Option<String>,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Parses the header with the exact grammar the SDK produces (`SDK-HMAC-SHA256
    /// Access=…` or `V11-HMAC-SHA256 Credential=AK/scope…`); `None` for anything else,
    /// including other algorithms.
    pub fn parse(value: &str) -> Option<Self> {
        let (access_key, scope, rest) = if let Some(rest) = value
            .strip_prefix(ALGORITHM)
            .and_then(|r| r.strip_prefix(' '))
        {
            let (first, rest) = rest.split_once(", ")?;
            (first.strip_prefix("Access=")?, None, rest)
        } else {
            let rest = value.strip_prefix(DERIVED_ALGORITHM)?.strip_prefix(' ')?;
            let (first, rest) = rest.split_once(", ")?;
            let (ak, scope) = first.strip_prefix("Credential=")?.split_once('/')?;
            let mut pieces = scope.split('/');
            let date = pieces.next()?;
            let well_formed = date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && pieces.clone().count() == 2
                && pieces.all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
            if !well_formed {
                return None;
            }
            (ak, Some(scope.to_string()), rest)
        };
        let mut parts = rest.split(", ");
        let signed = parts.next()?.strip_prefix("SignedHeaders=")?;
        let signature = parts.next()?.strip_prefix("Signature=")?;
        if parts.next().is_some() || access_key.is_empty() || signed.is_empty() {
            return None;
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
        let well_formed = signed_headers.iter().all(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !well_formed
            || signature.len() != 64
            || !signature.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        Some(Self {
            access_key: access_key.to_string(),
            scope,
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// Renders the header value.
    pub fn render(&self) -> String {
        let credential = match &self.scope {
            Some(scope) => format!("{DERIVED_ALGORITHM} Credential={}/{scope}", self.access_key),
            None => format!("{ALGORITHM} Access={}", self.access_key),
        };
        format!(
            "{credential}, SignedHeaders={}, Signature={}",
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

/// The service a derived key's scope must name.
pub const SERVICE: &str = "modelarts";

/// True when a derived key's scope (`YYYYMMDD/region/service`) is for this service, in a
/// region (its day is checked against the request's date by [`verify`]). Any region: one
/// service may hold the projects of several (named after them, as the emulator's are).
pub fn scope_serves(scope: &str) -> bool {
    let mut parts = scope.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_day), Some(region), Some(service), None) => !region.is_empty() && service == SERVICE,
        _ => false,
    }
}

/// Checks `auth` against the request with the caller's secret key, in constant time.
/// Returns false when the signature does not match or a signed header is missing.
pub fn verify(parts: &RequestParts<'_>, auth: &Authorization, secret_key: &str) -> bool {
    let Some(date) = parts.header(DATE_HEADER) else {
        return false;
    };
    // A body is signed by its hash. A hash the request declares for it in place of its own
    // (`X-Sdk-Content-Sha256`, which the canonical request takes as it is) must be the
    // hash of the bytes received: otherwise the signature would cover any body, and
    // `UNSIGNED-PAYLOAD`, for the uploads of other APIs, would sign none.
    if let Some(declared) = parts.header(CONTENT_SHA256_HEADER) {
        if !parts.body.is_empty() && !declared.eq_ignore_ascii_case(&sha256_hex(parts.body)) {
            return false;
        }
    }
    let all_present = auth
        .signed_headers
        .iter()
        .all(|h| parts.header(h).is_some());
    let canonical = canonical_request(parts, &auth.signed_headers);
    let date = date.trim();
    let expected = match &auth.scope {
        None => mac(
            secret_key.as_bytes(),
            string_to_sign(date, &canonical).as_bytes(),
        ),
        // A derived key is good for the day of the request only.
        Some(scope) if date.get(..8).is_some_and(|day| scope.starts_with(day)) => {
            derived_mac(secret_key, &auth.access_key, scope, date, &canonical)
        }
        Some(_) => return false,
    };
    // The parsed signature is 64 hex digits: compared as the 32 bytes they spell.
    let mut given = [0u8; 32];
    if hex::decode_to_slice(&auth.signature, &mut given).is_err() {
        return false;
    }
    let matches: bool = expected.ct_eq(&given).into();
    matches && all_present
}

/// An access key and its secret, as a client holds them.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Signs a request on the client side: adds `X-Sdk-Date` (unless present) and returns the
/// `Authorization` value over every header present (names without `_`), as the SDK does.
/// `headers` must already hold `Host` and the other headers to be signed.
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    credentials: &Credentials,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(DATE_HEADER))
    {
        headers.push(("X-Sdk-Date".into(), now.format(DATE_FORMAT).to_string()));
    }
    let mut signed: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !n.contains('_') && n != "authorization")
        .collect();
    signed.sort();
    signed.dedup();
    let pairs = borrowed_headers(headers);
    let parts = RequestParts {
        method,
        path,
        query,
        headers: &pairs,
        body,
    };
    let date = parts.header(DATE_HEADER).unwrap_or_default().to_string();
    let canonical = canonical_request(&parts, &signed);
    Authorization {
        access_key: credentials.access_key.clone(),
        scope: None,
        signature: signature(&credentials.secret_key, &string_to_sign(&date, &canonical)),
        signed_headers: signed,
    }
    .render()
}

/// Parses an `X-Sdk-Date` value.
pub fn parse_sdk_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::format::{Item, Numeric, Pad, Parsed};
    // [`DATE_FORMAT`] as chrono reads it, spelled out once rather than parsed per request.
    const ITEMS: [Item<'static>; 8] = [
        Item::Numeric(Numeric::Year, Pad::Zero),
        Item::Numeric(Numeric::Month, Pad::Zero),
        Item::Numeric(Numeric::Day, Pad::Zero),
        Item::Literal("T"),
        Item::Numeric(Numeric::Hour, Pad::Zero),
        Item::Numeric(Numeric::Minute, Pad::Zero),
        Item::Numeric(Numeric::Second, Pad::Zero),
        Item::Literal("Z"),
    ];
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, value.trim(), ITEMS.iter()).ok()?;
    parsed
        .to_naive_datetime_with_offset(0)
        .ok()
        .map(|d| d.and_utc())
}

#[cfg(test)]
mod tests;
