//! The whole pipeline on one machine with no AWS account (`make demo`, the end-to-end tests, the soak): the
//! AppZen sandbox, a fault-injecting proxy in front of moto, the local SQS event-source poller, the stack's
//! environment read from the template as moto's CloudFormation deploys it, and [`local::LocalStack`], which
//! starts them all with the three functions under `cargo lambda watch`.

pub mod appzen_sandbox;
pub mod exsited_sandbox;
pub mod fault_proxy;
pub mod lambda_control;
pub mod local;
pub mod poller;
pub mod sandbox_kit;
pub mod stack_env;
