//! The one input pipeline: every surface reads its JSON bodies with [`read_json`] into a serde
//! DTO and converts [`BodyError`] into its own wire error, so malformed JSON, wrong media
//! types, oversized bodies and mistyped fields answer in the surface's shape (API.md, "Bad
//! input").

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest request body accepted, in bytes (API.md, "Bad input": 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a request body could not be read into the expected DTO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// `Content-Type` is missing or not JSON.
    UnsupportedMediaType,
    /// Larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not valid JSON; the parser's message.
    Malformed(String),
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A JSON object whose member at `path` (e.g. `password`, `profile.given_name`) is missing
    /// or of the wrong type.
    Schema {
        /// The member, as a dotted JSON path.
        path: String,
        /// What serde expected.
        message: String,
    },
}

impl BodyError {
    /// The HTTP status for this rejection: 415, 413, 400 (not JSON, not an object) or 422
    /// (an object of the wrong shape). Surfaces whose seed says otherwise pick their own.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Malformed(_) | BodyError::NotAnObject => StatusCode::BAD_REQUEST,
            BodyError::Schema { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// A message for the client.
    pub fn message(&self) -> String {
        match self {
            BodyError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            BodyError::TooLarge => format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            BodyError::Malformed(e) => format!("request body is not valid JSON: {e}"),
            BodyError::NotAnObject => "request body must be a JSON object".into(),
            BodyError::Schema { path, message } => format!("{path}: {message}"),
        }
    }
}

/// Whether a `Content-Type` is JSON: `application/json`, `application/*+json` or AWS's
/// `application/x-amz-json-1.0/1.1`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json") || essence.starts_with("application/x-amz-json-")
}

/// Reads the request body as a JSON object and deserialises it into `T`.
///
/// # Errors
/// [`BodyError::UnsupportedMediaType`] unless the media type is JSON, [`BodyError::TooLarge`]
/// past the body limit, [`BodyError::Malformed`] for invalid JSON, [`BodyError::NotAnObject`]
/// for other JSON values, and [`BodyError::Schema`] naming the first member that does not fit
/// `T` (DTOs made of [`Lenient`](super::Lenient) fields never fail here).
pub async fn read_json<T: DeserializeOwned>(req: Request) -> Result<T, BodyError> {
    if !is_json(req.headers()) {
        return Err(BodyError::UnsupportedMediaType);
    }
    let bytes = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge
        } else {
            BodyError::Malformed(rejection.body_text())
        }
    })?;
    let value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Err(BodyError::NotAnObject),
        Err(e) => return Err(BodyError::Malformed(e.to_string())),
    };
    serde_path_to_error::deserialize(value)
        .map_err(|e| BodyError::Schema { path: e.path().to_string(), message: e.inner().to_string() })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Dto {
        #[allow(dead_code)]
        name: String,
    }

    fn request(content_type: &str, body: &'static str) -> Request {
        Request::builder().header(CONTENT_TYPE, content_type).body(Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn each_kind_of_bad_body_is_told_apart() {
        let cases = [
            (request("text/plain", "{}"), BodyError::UnsupportedMediaType),
            (request("application/json", "{\"name\":"), BodyError::Malformed(String::new())),
            (request("application/json", "[1]"), BodyError::NotAnObject),
            (
                request("application/json", "{\"name\": 7}"),
                BodyError::Schema { path: "name".into(), message: String::new() },
            ),
        ];
        for (req, expected) in cases {
            let got = read_json::<Dto>(req).await.expect_err("rejected");
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&expected), "{got:?}");
            if let BodyError::Schema { path, .. } = got {
                assert_eq!(path, "name");
            }
        }
        assert!(read_json::<Dto>(request("application/json; charset=utf-8", "{\"name\":\"a\"}")).await.is_ok());
        assert!(read_json::<Dto>(request("application/x-amz-json-1.1", "{\"name\":\"a\"}")).await.is_ok());
    }
}
