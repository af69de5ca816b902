//! The S3 destination: SigV4 by `rusty-s3` (presigned requests, every header we send signed),
//! HTTP by `ureq` over rustls/ring. One `PUT` with `Content-MD5` for small objects; a multipart
//! upload, resumable from the persisted [`InFlight`] record, for large ones. The confirmation is a
//! fresh `HEAD`: the server's length and ETag.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use fleet_core::upload::{FailureScope, RemoteConfirmation};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, HeadObject, PutObject,
    UploadPart,
};
use rusty_s3::{Bucket, S3Action};
use serde::{Deserialize, Serialize};

use crate::config::{Credentials, S3Destination, UrlStyle};
use crate::object::{Digests, Kind, parse_etag};
use crate::pace::{Pacer, STOPPED};

/// How long a presigned request stays valid (it is used at once).
const SIGNATURE_TTL: Duration = Duration::from_secs(900);

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("unable to use the S3 endpoint: {message}")]
    Endpoint { message: String },
    #[error("unable to {op}: {message}")]
    Transport { op: &'static str, message: String },
    #[error("unable to {op}: the server answered {status} {code}")]
    Status {
        op: &'static str,
        status: u16,
        code: String,
    },
    #[error("unable to {op}: {message}")]
    Mismatch { op: &'static str, message: String },
    #[error("unable to read {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upload interrupted by shutdown")]
    Stopped,
}

impl S3Error {
    /// A short stable reason the status file counts.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::Endpoint { .. } => "endpoint".into(),
            Self::Transport { .. } => "connection".into(),
            Self::Status { status, code, .. } => match (*status, code.as_str()) {
                (401 | 403, _) => "auth".into(),
                (_, "BadDigest" | "InvalidDigest") => "bad-digest".into(),
                (_, "NoSuchUpload") => "no-such-upload".into(),
                (_, "NoSuchBucket") => "no-such-bucket".into(),
                (s, _) => format!("http-{s}"),
            },
            Self::Mismatch { .. } => "checksum".into(),
            Self::Local { .. } => "local-read".into(),
            Self::Stopped => "shutdown".into(),
        }
    }

    /// Whether the link (and every recording) waits, or only this recording counts a failure.
    #[must_use]
    pub fn scope(&self) -> FailureScope {
        match self {
            Self::Endpoint { .. } | Self::Transport { .. } | Self::Stopped => FailureScope::Link,
            Self::Status { status, code, .. } => {
                if *status >= 500
                    || matches!(*status, 401 | 403 | 408 | 429)
                    || code == "NoSuchBucket"
                {
                    FailureScope::Link
                } else {
                    FailureScope::Recording
                }
            }
            Self::Mismatch { .. } | Self::Local { .. } => FailureScope::Recording,
        }
    }
}

/// A multipart upload in progress, persisted after every confirmed part so a restart resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InFlight {
    /// The recording's path, relative to the recordings directory.
    pub recording: String,
    pub key: String,
    pub upload_id: String,
    /// The spool file sent, and what it was: a resume sends the same bytes or starts over.
    pub object: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub part_size: u64,
    /// Parts the server confirmed (number, ETag).
    pub parts: Vec<(u16, String)>,
}

/// An S3 bucket with the credentials of this connect.
pub struct S3 {
    bucket: Bucket,
    credentials: rusty_s3::Credentials,
    agent: ureq::Agent,
    max_response_bytes: u64,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

struct Answer {
    status: u16,
    etag: Option<String>,
    length: Option<u64>,
    body: String,
}

fn error_code(body: &str) -> String {
    body.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map_or_else(String::new, |(code, _)| code.trim().to_owned())
}

impl S3 {
    /// # Errors
    /// The endpoint is not a usable URL for the bucket.
    pub fn new(
        dest: &S3Destination,
        credentials: &Credentials,
        max_response_bytes: u64,
    ) -> Result<Self, S3Error> {
        let endpoint: url::Url = dest.endpoint.parse().map_err(|e| S3Error::Endpoint {
            message: format!("{}: {e}", dest.endpoint),
        })?;
        let style = match dest.url_style {
            UrlStyle::Path => rusty_s3::UrlStyle::Path,
            UrlStyle::VirtualHost => rusty_s3::UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(endpoint, style, dest.bucket.clone(), dest.region.clone())
            .map_err(|e| S3Error::Endpoint {
                message: e.to_string(),
            })?;
        let credentials = match &credentials.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
                t.clone(),
            ),
            None => rusty_s3::Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.clone(),
            ),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(Some(dest.timeout))
            .timeout_connect(Some(dest.timeout))
            .timeout_recv_response(Some(dest.timeout))
            .timeout_per_read(Some(dest.timeout))
            .timeout_per_write(Some(dest.timeout))
            .max_redirects(0)
            .build()
            .into();
        Ok(Self {
            bucket,
            credentials,
            agent,
            max_response_bytes,
        })
    }

    fn finish(
        op: &'static str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        max: u64,
    ) -> Result<Answer, S3Error> {
        let mut resp = r.map_err(|e| match e {
            ureq::Error::Io(ref io) if io.to_string().contains(STOPPED) => S3Error::Stopped,
            other => S3Error::Transport {
                op,
                message: other.to_string(),
            },
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header("etag");
        let length = header("content-length").and_then(|v| v.parse().ok());
        let body = if op == "read the object's metadata" {
            String::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(max)
                .read_to_string()
                .map_err(|e| S3Error::Transport {
                    op,
                    message: e.to_string(),
                })?
        };
        if !(200..300).contains(&status) {
            return Err(S3Error::Status {
                op,
                status,
                code: error_code(&body),
            });
        }
        Ok(Answer {
            status,
            etag,
            length,
            body,
        })
    }

    /// Sends `len` bytes of `path` from `offset` with `Content-MD5`.
    #[allow(clippy::too_many_arguments)]
    fn put_bytes(
        &self,
        op: &'static str,
        url: &url::Url,
        headers: &[(&str, String)],
        path: &Path,
        offset: u64,
        len: u64,
        pacer: &mut Pacer<'_>,
    ) -> Result<Answer, S3Error> {
        let local = |source| S3Error::Local {
            path: path.to_owned(),
            source,
        };
        let mut f = File::open(path).map_err(local)?;
        f.seek(SeekFrom::Start(offset)).map_err(local)?;
        let mut req = self
            .agent
            .put(url.as_str())
            .header("content-length", len.to_string());
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let mut body = pacer.reader(f.take(len));
        let r = req.send(ureq::SendBody::from_reader(&mut body));
        Self::finish(op, r, self.max_response_bytes)
    }

    /// The object's length and ETag, `None` when there is no such object.
    ///
    /// # Errors
    /// Transport failures and answers other than 200 or 404.
    pub fn head(&self, key: &str) -> Result<Option<RemoteConfirmation>, S3Error> {
        let url = HeadObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNATURE_TTL);
        let r = self.agent.head(url.as_str()).call();
        match Self::finish("read the object's metadata", r, self.max_response_bytes) {
            Ok(a) => Ok(Some(RemoteConfirmation {
                size_bytes: a.length.unwrap_or(0),
                checksum: a.etag.as_deref().and_then(parse_etag),
            })),
            Err(S3Error::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One `PUT` with `Content-MD5` (the server refuses a body that does not match).
    ///
    /// # Errors
    /// Transport, status or local read failures; an ETag that is not the MD5 sent.
    pub fn put(
        &self,
        key: &str,
        path: &Path,
        digests: &Digests,
        kind: Kind,
        pacer: &mut Pacer<'_>,
    ) -> Result<(), S3Error> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(digests.md5);
        let mut action = PutObject::new(&self.bucket, Some(&self.credentials), key);
        action.headers_mut().insert("content-md5", md5.clone());
        action
            .headers_mut()
            .insert("content-type", kind.content_type());
        let url = action.sign(SIGNATURE_TTL);
        let headers = [
            ("content-md5", md5),
            ("content-type", kind.content_type().to_owned()),
        ];
        let a = self.put_bytes(
            "put the object",
            &url,
            &headers,
            path,
            0,
            digests.size,
            pacer,
        )?;
        check_etag("put the object", a.etag.as_deref(), &digests.md5)?;
        let _ = a.status;
        Ok(())
    }

    fn create_multipart(&self, key: &str, kind: Kind) -> Result<String, S3Error> {
        let mut action = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        action
            .headers_mut()
            .insert("content-type", kind.content_type());
        let url = action.sign(SIGNATURE_TTL);
        let r = self
            .agent
            .post(url.as_str())
            .header("content-type", kind.content_type())
            .send_empty();
        let a = Self::finish("start a multipart upload", r, self.max_response_bytes)?;
        let parsed =
            CreateMultipartUpload::parse_response(&a.body).map_err(|e| S3Error::Transport {
                op: "start a multipart upload",
                message: format!("unreadable answer: {e}"),
            })?;
        Ok(parsed.upload_id().to_owned())
    }

    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), S3Error> {
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNATURE_TTL);
        let body = action.body();
        let r = self.agent.post(url.as_str()).send(body.as_bytes());
        let a = Self::finish("complete the multipart upload", r, self.max_response_bytes)?;
        // Some servers answer 200 with an error document (the request ran long).
        if a.body.contains("<Error>") {
            return Err(S3Error::Status {
                op: "complete the multipart upload",
                status: 500,
                code: error_code(&a.body),
            });
        }
        Ok(())
    }

    /// Drops an abandoned multipart upload (best effort: the server's lifecycle rules clean up
    /// what this misses).
    pub fn abort(&self, key: &str, upload_id: &str) {
        let url = AbortMultipartUpload::new(&self.bucket, Some(&self.credentials), key, upload_id)
            .sign(SIGNATURE_TTL);
        if let Err(e) = self.agent.delete(url.as_str()).call() {
            tracing::debug!(key, error = %e, "abort of a multipart upload failed");
        }
    }

    /// Uploads `path` as a multipart upload, resuming `resume` when it describes the same object.
    /// `persist` is called with the record after the upload starts and after every part.
    ///
    /// # Errors
    /// Any failed request; a part whose ETag is not its MD5; `persist` failing.
    #[allow(clippy::too_many_arguments)]
    pub fn multipart(
        &self,
        recording: &str,
        key: &str,
        path: &Path,
        digests: &Digests,
        kind: Kind,
        resume: Option<InFlight>,
        persist: &mut dyn FnMut(Option<&InFlight>) -> std::io::Result<()>,
        pacer: &mut Pacer<'_>,
    ) -> Result<(), S3Error> {
        let sha256 = hex::encode(digests.sha256);
        let persist_err = |source| S3Error::Local {
            path: PathBuf::from("queue.json"),
            source,
        };
        let same = |r: &InFlight| {
            r.key == key
                && r.recording == recording
                && r.size == digests.size
                && r.sha256 == sha256
                && r.part_size == digests.part_size
        };
        let mut record = match resume {
            Some(r) if same(&r) => r,
            other => {
                if let Some(old) = other {
                    self.abort(&old.key, &old.upload_id);
                }
                let upload_id = self.create_multipart(key, kind)?;
                let r = InFlight {
                    recording: recording.to_owned(),
                    key: key.to_owned(),
                    upload_id,
                    object: path.to_owned(),
                    size: digests.size,
                    sha256: sha256.clone(),
                    part_size: digests.part_size,
                    parts: Vec::new(),
                };
                persist(Some(&r)).map_err(persist_err)?;
                r
            }
        };
        // Parts the server confirmed before (their ETag was their MD5 when they were sent) are not
        // sent again. The server checks the list at completion; a part it lost fails the
        // completion, and the next try starts the upload afresh.
        let confirmed = std::mem::take(&mut record.parts);
        let mut etags = Vec::with_capacity(digests.part_md5s.len());
        record.parts.clear();
        for (i, md5) in digests.part_md5s.iter().enumerate() {
            let number = u16::try_from(i + 1).map_err(|_| S3Error::Mismatch {
                op: "plan the parts",
                message: "more than 65,535 parts".into(),
            })?;
            let offset = i as u64 * digests.part_size;
            let len = digests.part_size.min(digests.size - offset);
            let want = hex::encode(md5);
            let held = confirmed.iter().find(|(n, etag)| {
                *n == number && etag.trim_matches('"').eq_ignore_ascii_case(&want)
            });
            let etag = if let Some((_, etag)) = held {
                etag.clone()
            } else {
                let b64 = base64::engine::general_purpose::STANDARD.encode(md5);
                let mut action = UploadPart::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    number,
                    &record.upload_id,
                );
                action.headers_mut().insert("content-md5", b64.clone());
                let url = action.sign(SIGNATURE_TTL);
                let a = self.put_bytes(
                    "upload a part",
                    &url,
                    &[("content-md5", b64)],
                    path,
                    offset,
                    len,
                    pacer,
                )?;
                check_etag("upload a part", a.etag.as_deref(), md5)?;
                a.etag.unwrap_or_default()
            };
            record.parts.push((number, etag.clone()));
            etags.push(etag);
            persist(Some(&record)).map_err(persist_err)?;
        }
        match self.complete(key, &record.upload_id, &etags) {
            Ok(()) => {}
            Err(
                e @ S3Error::Status {
                    status: 400 | 404, ..
                },
            ) => {
                // The upload is gone or a part is missing: start afresh next time.
                persist(None).map_err(persist_err)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        persist(None).map_err(persist_err)?;
        Ok(())
    }
}

fn check_etag(op: &'static str, etag: Option<&str>, md5: &[u8; 16]) -> Result<(), S3Error> {
    let want = hex::encode(md5);
    match etag {
        Some(e) if e.trim_matches('"').eq_ignore_ascii_case(&want) => Ok(()),
        other => Err(S3Error::Mismatch {
            op,
            message: format!("the server's ETag {other:?} is not the MD5 sent ({want})"),
        }),
    }
}
