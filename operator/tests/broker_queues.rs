//! The operator's queue admin against real brokers: a private RabbitMQ node and moto's SQS
//! server, each started on free loopback ports by the test (the host's test launchers).

use asya_operator::queues::{BrokerAdmin, Deleted, Ensured, QueueAdmin, RabbitAdmin, SqsAdmin};
use asya_spec::actor::Transport;

/// The host's server launchers (tests/common) and the loopback helpers they use.
#[allow(dead_code)]
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[allow(dead_code)]
#[path = "../../tests/common/net.rs"]
mod net;

#[path = "../../tests/common/rabbitmq.rs"]
mod rabbitmq;
#[path = "../../tests/common/sqs.rs"]
mod sqs;

#[tokio::test]
async fn rabbitmq_queues_are_declared_as_the_hosts_declare_them_and_kept_while_not_empty() {
    let rabbit = rabbitmq::RabbitServer::start_with(false);
    let admin = BrokerAdmin {
        rabbitmq: Some(RabbitAdmin::new(&rabbit.url())),
        sqs: None,
    };
    let queue = "asya-text-pipeline-classify";
    assert_eq!(
        admin
            .ensure_queue(Transport::Rabbitmq, queue)
            .await
            .unwrap(),
        Ensured::Created
    );
    assert_eq!(
        admin
            .ensure_queue(Transport::Rabbitmq, queue)
            .await
            .unwrap(),
        Ensured::Created,
        "idempotent"
    );
    // A host declares the same queue with the same arguments: accepted (a mismatch would be
    // PRECONDITION_FAILED), and a message sent there stays.
    let connection = lapin::Connection::connect(&rabbit.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("the host's declare matches the operator's");
    assert_eq!(declared.message_count(), 0);
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            Default::default(),
            b"work",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        admin
            .delete_queue(Transport::Rabbitmq, queue)
            .await
            .unwrap(),
        Deleted::KeptWithMessages,
        "deleting an actor never drops its queued work"
    );
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_purge(queue.into(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        admin
            .delete_queue(Transport::Rabbitmq, queue)
            .await
            .unwrap(),
        Deleted::Gone
    );
    assert_eq!(
        admin
            .delete_queue(Transport::Rabbitmq, queue)
            .await
            .unwrap(),
        Deleted::Gone,
        "already gone"
    );
    // SQS is not managed by this admin: the host declares those.
    assert_eq!(
        admin
            .ensure_queue(Transport::Sqs, "asya-x-y")
            .await
            .unwrap(),
        Ensured::NotManaged
    );
}

#[tokio::test]
async fn an_unreachable_rabbitmq_is_an_error_naming_the_operation() {
    let port = net::free_port();
    let admin = RabbitAdmin::new(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    let error = admin.declare("asya-a-b").await.unwrap_err();
    assert!(
        error.to_string().starts_with("connecting to RabbitMQ:"),
        "{error}"
    );
}

#[tokio::test]
async fn sqs_queues_are_created_and_kept_while_not_empty() {
    let moto = sqs::MotoServer::start();
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let admin = BrokerAdmin {
        rabbitmq: None,
        sqs: Some(SqsAdmin::new(sqs.clone())),
    };
    let queue = "asya-text-pipeline-text-processor";
    assert_eq!(
        admin.ensure_queue(Transport::Sqs, queue).await.unwrap(),
        Ensured::Created
    );
    // Made again by a host with its own visibility timeout: still fine for the operator.
    let url = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    assert_eq!(
        admin.ensure_queue(Transport::Sqs, queue).await.unwrap(),
        Ensured::Created
    );
    sqs.send_message()
        .queue_url(&url)
        .message_body("work")
        .send()
        .await
        .unwrap();
    assert_eq!(
        admin.delete_queue(Transport::Sqs, queue).await.unwrap(),
        Deleted::KeptWithMessages
    );
    let received = sqs.receive_message().queue_url(&url).send().await.unwrap();
    for message in received.messages() {
        sqs.delete_message()
            .queue_url(&url)
            .receipt_handle(message.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        admin.delete_queue(Transport::Sqs, queue).await.unwrap(),
        Deleted::Gone
    );
    assert!(
        sqs.get_queue_url().queue_name(queue).send().await.is_err(),
        "deleted"
    );
    assert_eq!(
        admin.delete_queue(Transport::Sqs, queue).await.unwrap(),
        Deleted::Gone,
        "already gone"
    );
}
