//! `/log/NAMESPACE/LOG`: append-only logs shared by CI runners (release channels).
//!
//! `GET` returns every line, with the head (BLAKE3 of the last line) as the `ETag`
//! (`"empty"` for an empty log). `POST` appends one line under HTTP's own conditional
//! request: `If-Match: "<head>"`, or `If-None-Match: *` for the first line. When the head
//! moved, the answer is `412 Precondition Failed` with the current head as the `ETag`, and
//! nothing changes, so concurrent writers never lose a line. The server checks only the
//! shape of a line (one line of JSON, bounded); what it means, and whether its signature
//! holds, is for the readers, which verify the whole chain before they trust it.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use mlbuild_digest::Digest;
use mlbuild_store::logs::{check_line, AppendLog, Appended, LogName, MAX_LINE_BYTES};

use super::{full, text, ResponseBody, State};

/// The `ETag` of a log whose head is `head`.
pub fn etag(head: Option<&Digest>) -> String {
    match head {
        Some(d) => format!("\"{}\"", d.to_hex()),
        None => "\"empty\"".to_owned(),
    }
}

fn with_etag(mut resp: Response<ResponseBody>, head: Option<&Digest>) -> Response<ResponseBody> {
    if let Ok(value) = HeaderValue::from_str(&etag(head)) {
        resp.headers_mut().insert(ETAG, value);
    }
    resp
}

pub(super) async fn respond(
    state: &Arc<State>,
    name: LogName,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if req.method() == Method::GET {
        let state = state.clone();
        let read = tokio::task::spawn_blocking(move || state.logs.read(&name)).await;
        return match read {
            Ok(Ok(lines)) => {
                let head = lines.last().map(|l| mlbuild_store::logs::line_hash(l));
                let mut body = lines.join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                let mut resp = full(StatusCode::OK, body);
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/jsonl; charset=utf-8"),
                );
                with_etag(resp, head.as_ref())
            }
            Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.message),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the read failed"),
        };
    }
    // POST: the precondition first, so a client learns at once what it must send.
    let expected: Option<Digest> = match (
        req.headers().get(IF_MATCH),
        req.headers().get(IF_NONE_MATCH),
    ) {
        (Some(value), None) => {
            let tag = value.to_str().unwrap_or("").trim().trim_matches('"');
            match tag.parse::<Digest>() {
                Ok(d) => Some(d),
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "`If-Match` must be the log's head, the `ETag` of a `GET`",
                    )
                }
            }
        }
        (None, Some(value)) if value.to_str().is_ok_and(|v| v.trim() == "*") => None,
        _ => return text(
            StatusCode::PRECONDITION_REQUIRED,
            "an append needs `If-Match: \"<head>\"` (or `If-None-Match: *` for the first record)",
        ),
    };
    let body = match Limited::new(req.into_body(), MAX_LINE_BYTES + 2)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("log records are limited to {MAX_LINE_BYTES} bytes"),
            )
        }
    };
    let Ok(line) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "a log record must be UTF-8");
    };
    let line = line.strip_suffix('\n').unwrap_or(&line).to_owned();
    if let Err(why) = check_line(&line) {
        return text(StatusCode::BAD_REQUEST, &format!("not a log record: {why}"));
    }
    if serde_json::from_str::<serde_json::Value>(&line).is_err() {
        return text(StatusCode::BAD_REQUEST, "not a log record: not JSON");
    }
    let state = state.clone();
    let appended =
        tokio::task::spawn_blocking(move || state.logs.append(&name, expected.as_ref(), &line))
            .await;
    match appended {
        Ok(Ok(Appended::Done { head })) => {
            with_etag(text(StatusCode::CREATED, "appended"), Some(&head))
        }
        Ok(Ok(Appended::Conflict { head })) => with_etag(
            text(
                StatusCode::PRECONDITION_FAILED,
                &format!("the log's head is now {}", etag(head.as_ref())),
            ),
            head.as_ref(),
        ),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.message),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the append failed"),
    }
}
