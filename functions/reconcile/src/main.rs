//! Lambda entry point: tracing, metrics, configuration, clients (built once), then the runtime loop.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use po_sync::config::ProcessEnv;
use po_sync::config::reconcile::{DestinationConfig, ReconcileConfig};
use po_sync_aws::metrics::{Metrics, Service};
use reconcile::{Reconciler, deadline_of};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = ReconcileConfig::from_env(&ProcessEnv)?;
    // Each destination's reconcile has its own metric series.
    let service = match config.destination {
        DestinationConfig::AppZen(_) => Service::Reconcile,
        DestinationConfig::Exsited(_) => Service::ReconcileExsited,
    };
    let metrics = Metrics::install(service, &ProcessEnv)?;
    let aws = po_sync_aws::load_aws_config().await;
    let reconciler = Reconciler::start(config, &aws).await?;
    let (reconciler, metrics) = (&reconciler, &metrics);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        // Each invocation's metrics are written as EMF lines once it is done, before Lambda gets the answer.
        let batch = reconciler.handle_batch(event.payload, deadline_of(&event.context));
        Ok::<SqsBatchResponse, Error>(metrics.invocation(&event.context.request_id, batch).await)
    }))
    .await
}
