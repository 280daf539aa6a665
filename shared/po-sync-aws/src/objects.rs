//! The object storage port: the invoice archive, every kept webhook body and, for POs too large for one SQS
//! message, the claim-checked envelopes; S3 in Lambda and in the operator CLI, memory in tests.

use crate::port::{Failure, PortError};
use aws_sdk_s3::primitives::ByteStream;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// The bytes of an object to store: shared, not copied, by the upload (and by its retries).
pub use bytes::Bytes;

/// One object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject<'a> {
    pub key: &'a str,
    /// `Bytes`, so that S3's request body is the caller's buffer itself, not a copy of it.
    pub bytes: Bytes,
    pub content_type: &'a str,
    /// User metadata (`x-amz-meta-*`): ASCII names and values.
    pub metadata: &'a [(&'a str, String)],
}

pub trait ObjectStore: Send + Sync {
    /// The bucket's name, for `s3://bucket/key` locations.
    fn bucket(&self) -> &str;
    /// Whether an object exists at `key`.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
    fn put(&self, object: &NewObject<'_>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The object's bytes, `None` when there is none.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send;
    /// The objects whose keys start with `prefix`, in key order, at most `limit` of them; the flag says whether
    /// more were left out.
    fn list(&self, prefix: &str, limit: usize) -> impl Future<Output = Result<(Vec<Listed>, bool), PortError>> + Send;
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl<S: ObjectStore> ObjectStore for &S {
    fn bucket(&self) -> &str {
        (**self).bucket()
    }
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, PortError>> + Send {
        (**self).exists(key)
    }
    fn put(&self, object: &NewObject<'_>) -> impl Future<Output = Result<(), PortError>> + Send {
        (**self).put(object)
    }
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send {
        (**self).get(key)
    }
    fn list(&self, prefix: &str, limit: usize) -> impl Future<Output = Result<(Vec<Listed>, bool), PortError>> + Send {
        (**self).list(prefix, limit)
    }
}

/// `s3://bucket/key`.
pub fn location(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

const HEAD_OBJECT: &str = "s3:HeadObject";
const LIST_OBJECTS: &str = "s3:ListBucket";
const PUT_OBJECT: &str = "s3:PutObject";
const GET_OBJECT: &str = "s3:GetObject";

/// The stack's bucket (`ARCHIVE_BUCKET`).
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3ObjectStore {
    /// The client from the shared configuration; with an explicit endpoint (`AWS_ENDPOINT_URL`, an emulator
    /// such as moto) path-style addressing, since `bucket.127.0.0.1` does not resolve.
    pub fn new(aws: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        S3ObjectStore { client: s3_client(aws), bucket: bucket.into() }
    }

    /// With a client already built (by [`s3_client`]).
    pub fn with_client(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3ObjectStore { client, bucket: bucket.into() }
    }
}

/// An S3 client from the shared configuration: path-style addressing with an explicit endpoint
/// (`AWS_ENDPOINT_URL`, an emulator such as moto), since `bucket.127.0.0.1` does not resolve.
pub fn s3_client(aws: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(aws).force_path_style(aws.endpoint_url().is_some()).build();
    aws_sdk_s3::Client::from_conf(config)
}

impl ObjectStore for S3ObjectStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(PortError::from_sdk(HEAD_OBJECT, e)),
        }
    }

    async fn put(&self, object: &NewObject<'_>) -> Result<(), PortError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object.key)
            .content_type(object.content_type)
            .body(ByteStream::from(object.bytes.clone()));
        for (name, value) in object.metadata {
            request = request.metadata(*name, value);
        }
        request.send().await.map(|_| ()).map_err(|e| PortError::from_sdk(PUT_OBJECT, e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => {
                let bytes = output.body.collect().await.map_err(|e| {
                    PortError::new(GET_OBJECT, Failure::Transient, format!("reading s3://{}/{key}: {e}", self.bucket))
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(PortError::from_sdk(GET_OBJECT, e)),
        }
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<(Vec<Listed>, bool), PortError> {
        let mut listed = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| PortError::from_sdk(LIST_OBJECTS, e))?;
            for object in page.contents() {
                if listed.len() == limit {
                    return Ok((listed, true));
                }
                let Some(key) = object.key() else { continue };
                listed.push(Listed { key: key.to_owned(), size: object.size().unwrap_or_default().max(0) as u64 });
            }
        }
        Ok((listed, false))
    }
}

/// An in-memory bucket; counts puts (to see that a re-run does not upload again) and can fail on demand.
#[derive(Debug, Default)]
pub struct MemoryObjectStore {
    state: Mutex<MemoryBucket>,
}

#[derive(Debug, Default)]
struct MemoryBucket {
    objects: HashMap<String, StoredObject>,
    puts: usize,
    failures: Vec<Failure>,
}

/// An object as [`MemoryObjectStore`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub metadata: Vec<(String, String)>,
}

impl MemoryObjectStore {
    pub fn object(&self, key: &str) -> Option<StoredObject> {
        self.state.lock().ok().and_then(|s| s.objects.get(key).cloned())
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.state.lock().map(|s| s.objects.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        keys
    }

    /// How many puts succeeded so far.
    pub fn puts(&self) -> usize {
        self.state.lock().map(|s| s.puts).unwrap_or_default()
    }

    pub fn fail_next(&self, count: usize, failure: Failure) {
        if let Ok(mut state) = self.state.lock() {
            state.failures.extend(std::iter::repeat_n(failure, count));
        }
    }

    fn with<T>(&self, operation: &'static str, f: impl FnOnce(&mut MemoryBucket) -> T) -> Result<T, PortError> {
        let mut state =
            self.state.lock().map_err(|_| PortError::new(operation, Failure::Permanent, "memory bucket poisoned"))?;
        if !state.failures.is_empty() {
            let failure = state.failures.remove(0);
            return Err(PortError::new(operation, failure, "injected failure"));
        }
        Ok(f(&mut state))
    }
}

impl ObjectStore for MemoryObjectStore {
    fn bucket(&self) -> &str {
        "memory-bucket"
    }

    async fn exists(&self, key: &str) -> Result<bool, PortError> {
        self.with(HEAD_OBJECT, |b| b.objects.contains_key(key))
    }

    async fn put(&self, object: &NewObject<'_>) -> Result<(), PortError> {
        self.with(PUT_OBJECT, |b| {
            b.puts += 1;
            let stored = StoredObject {
                bytes: object.bytes.to_vec(),
                content_type: object.content_type.to_owned(),
                metadata: object.metadata.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            };
            b.objects.insert(object.key.to_owned(), stored);
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.with(GET_OBJECT, |b| b.objects.get(key).map(|o| o.bytes.clone()))
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<(Vec<Listed>, bool), PortError> {
        self.with(LIST_OBJECTS, |b| {
            let mut listed: Vec<Listed> = b
                .objects
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, object)| Listed { key: key.clone(), size: object.bytes.len() as u64 })
                .collect();
            listed.sort_by(|a, b| a.key.cmp(&b.key));
            let more = listed.len() > limit;
            listed.truncate(limit);
            (listed, more)
        })
    }
}
