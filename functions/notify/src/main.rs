//! notify's Lambda entry point: tracing, metrics, configuration, clients (built once), then the runtime loop.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use notify::Notifier;
use po_sync::config::{ProcessEnv, notify::NotifyConfig};
use po_sync_aws::metrics::{Metrics, Service};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let metrics = Metrics::install(Service::Notify, &ProcessEnv)?;
    let config =
        NotifyConfig::from_env(&ProcessEnv).inspect_err(|e| tracing::error!(error = %e, "notify cannot start"))?;
    if config.parked_queue_url.is_none() {
        tracing::warn!(
            "PARKED_QUEUE_URL is not set: dead-lettered webhooks are e-mailed but not kept, so they cannot be redriven"
        );
    }
    let notifier = Notifier::start(config, &po_sync_aws::load_aws_config().await);
    tracing::info!(recipients = notifier.config.to.len(), parked_queue = notifier.parked.is_some(), "notify ready");
    let (notifier, metrics) = (&notifier, &metrics);
    // Each invocation's metrics are written as EMF lines once it is done, before Lambda gets the answer.
    run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, Error>(metrics.invocation(&event.context.request_id, notifier.handle(event.payload)).await)
    }))
    .await
}
