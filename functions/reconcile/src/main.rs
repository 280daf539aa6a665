//! Lambda entry point: tracing, configuration, clients (built once), then the runtime loop.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use po_sync::config::{ProcessEnv, reconcile::ReconcileConfig};
use reconcile::{Reconciler, deadline_of};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = ReconcileConfig::from_env(&ProcessEnv)?;
    let aws = po_sync_aws::load_aws_config().await;
    let reconciler = Reconciler::start(config, &aws).await?;
    let reconciler = &reconciler;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(reconciler.handle_batch(event.payload, deadline_of(&event.context)).await)
    }))
    .await
}
