//! moto server (PyPI `moto[server]`) as a real SQS / SES / DynamoDB / Secrets Manager endpoint for tests: one
//! server per test on a free 127.0.0.1 port, stopped by its own PID even if the test panics.
//!
//! A crate of its own, below everything po-sync builds: po-sync-aws's tests use it without a dependency cycle
//! (po-sync-test-support, which re-exports it as `moto`, depends on po-sync-aws).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The workspace root (where `Cargo.toml`, `.venv/` and `shared/po-sync/tests/fixtures/` are).
pub fn workspace_root() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// A running moto server, killed (by PID) when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
}

/// Where moto_server is: `$MOTO_SERVER`, else the project's `.venv`, else `PATH`.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.exists() { venv } else { PathBuf::from("moto_server") }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux: /proc/net/tcp, then its fds).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 9 && fields[1] == local && fields[3] == "0A")
        .map(|fields| format!("socket:[{}]", fields[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.to_str().is_some_and(|target| inodes.iter().any(|inode| inode == target)))
}

/// A port nobody is listening on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("local address of a bound listener").port()
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers. Panics with a clear message when moto is
    /// not installed: these tests must run, never skip (`make test` installs moto into `.venv`).
    pub fn start() -> MotoServer {
        let binary = moto_binary();
        for _attempt in 0..3 {
            let port = free_port();
            let mut command = Command::new(&binary);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // If the test process dies without unwinding, the kernel still stops moto.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command.spawn().unwrap_or_else(|e| {
                panic!("cannot start {}: {e}. Run `make test` (it installs moto[server] into .venv).", binary.display())
            });
            let mut server = MotoServer { child, port };
            if server.wait_until_ready(Duration::from_secs(60)) {
                return server;
            }
            // Lost a race for the port, or moto died: try another port.
        }
        panic!("moto_server did not start on 127.0.0.1 after 3 attempts");
    }

    fn wait_until_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_exited)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Another test's moto may have taken the port between `free_port` and this one's bind (ours then
                // exits): only a listener of our own child counts, or two tests would share one moto.
                return listens_on(self.child.id(), self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL`.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a function needs to talk to this moto through the SDK's standard variables.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// An SDK configuration pointing at this moto, built without touching the process environment
    /// (tests run on parallel threads).
    pub async fn sdk_config(&self) -> SdkConfig {
        let credentials = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "moto");
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint_url())
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// Everything moto recorded, as JSON (`GET /moto-api/data.json`); SES mail is under `ses.Message`.
    pub fn data(&self) -> serde_json::Value {
        let body = http_get(self.port, "/moto-api/data.json");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("moto data.json is not JSON: {e}"))
    }

    /// The e-mails moto's SES has accepted through `SendEmail` (`ses.Message`) and `SendRawEmail`
    /// (`ses.RawMessage`), oldest first. Note: for `SendEmail` moto records one `body`, the HTML part when
    /// there is one.
    pub fn sent_emails(&self) -> Vec<serde_json::Value> {
        let data = self.data();
        ["/ses/Message", "/ses/RawMessage"]
            .iter()
            .filter_map(|pointer| data.pointer(pointer).and_then(|v| v.as_array()).cloned())
            .flatten()
            .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a FIFO queue and returns its URL. With `dead_letter = Some((dlq_url, max_receive_count))` it
/// redrives there after that many receives, as the SAM template's queues do.
pub async fn create_fifo_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dead_letter: Option<(&str, u32)>,
    visibility_timeout_seconds: Option<u32>,
) -> Result<String, aws_sdk_sqs::Error> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut request = sqs.create_queue().queue_name(name).attributes(QueueAttributeName::FifoQueue, "true");
    if let Some(seconds) = visibility_timeout_seconds {
        request = request.attributes(QueueAttributeName::VisibilityTimeout, seconds.to_string());
    }
    if let Some((dlq_url, max_receive_count)) = dead_letter {
        let attributes =
            sqs.get_queue_attributes().queue_url(dlq_url).attribute_names(QueueAttributeName::QueueArn).send().await?;
        let dlq_arn =
            attributes.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default();
        let policy = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count });
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    let created = request.send().await?;
    Ok(created.queue_url().unwrap_or_default().to_owned())
}

/// A minimal HTTP/1.0 GET to 127.0.0.1, so the harness needs no HTTP client of its own.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to 127.0.0.1");
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// Creates an on-demand table keyed as the SAM template keys po-sync's tables (a string partition key, and a
/// string sort key when given) and returns its name. The key names come from the caller (po-sync-aws's
/// constants), so this crate knows no po-sync table.
pub async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    partition_key: &str,
    sort_key: Option<&str>,
) -> Result<String, aws_sdk_dynamodb::Error> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let string =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let mut request = dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string(partition_key)?)
        .key_schema(KeySchemaElement::builder().attribute_name(partition_key).key_type(KeyType::Hash).build()?);
    if let Some(sort_key) = sort_key {
        request = request
            .attribute_definitions(string(sort_key)?)
            .key_schema(KeySchemaElement::builder().attribute_name(sort_key).key_type(KeyType::Range).build()?);
    }
    request.send().await?;
    Ok(name.to_owned())
}
