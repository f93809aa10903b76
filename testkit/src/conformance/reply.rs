//! Request / reply: a [`Requester`] gets the reply to each of its own requests, a request
//! nobody answers times out, and closing a requester removes its private reply topic.
//!
//! These cases own the backend (`Arc<dyn Backend>`), because a requester keeps listening
//! on it in the background.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use wharf_core::reply::{Requester, Responder};
use wharf_core::{Backend, ErrorKind, Message, Subscriber};

use super::support::{ARRIVAL, Fixture, ack, receive, text};

/// Concurrent requests each get the reply to their own request, not another's.
pub async fn requests_get_their_own_replies(backend: Arc<dyn Backend>) {
    let fx = Fixture::new(&*backend, "reply");
    fx.run(async {
        let queue = fx.queue().await;
        let stop = CancellationToken::new();
        let responder = tokio::spawn(answer_in_upper_case(
            backend.clone(),
            queue.subscriber.clone(),
            stop.clone(),
        ));
        let requester = Requester::open(backend.clone(), queue.publisher.topic())
            .await
            .unwrap_or_else(|e| panic!("opening a requester failed: {e}"));

        let questions: Vec<String> = (0..8).map(|n| format!("question {n}")).collect();
        let replies = join_all(
            questions
                .iter()
                .map(|q| requester.request(Message::new(q.clone()), ARRIVAL)),
        )
        .await;

        stop.cancel();
        responder.await.expect("responder task");
        for (question, reply) in questions.iter().zip(replies) {
            let reply = reply.unwrap_or_else(|e| panic!("no reply to {question:?}: {e}"));
            assert_eq!(text(reply.payload()), question.to_uppercase());
        }
        requester.close().await.expect("closing the requester");
    })
    .await;
}

/// A request nobody answers fails with `Timeout` after its timeout, and closing the
/// requester deletes its reply topic.
pub async fn unanswered_request_times_out_and_close_cleans_up(backend: Arc<dyn Backend>) {
    let fx = Fixture::new(&*backend, "reply-timeout");
    fx.run(async {
        let queue = fx.queue().await;
        let requester = Requester::open(backend.clone(), queue.publisher.topic())
            .await
            .unwrap_or_else(|e| panic!("opening a requester failed: {e}"));
        let reply_topic = requester.reply_topic().to_owned();

        let error = requester
            .request(Message::new("anyone?"), Duration::from_secs(1))
            .await
            .expect_err("nobody answers");
        assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");

        requester.close().await.expect("closing the requester");
        let gone = match backend.publisher(&reply_topic).await {
            Err(error) => error.kind(),
            Ok(publisher) => match publisher.publish(Message::new("late")).await {
                Err(failed) => failed.error.kind(),
                Ok(()) => panic!("reply topic {reply_topic} still accepts messages after close"),
            },
        };
        assert_eq!(
            gone,
            ErrorKind::NotFound,
            "reply topic {reply_topic} after close"
        );
    })
    .await;
}

/// Answers every request on `subscriber` with its payload in upper case until stopped.
async fn answer_in_upper_case(
    backend: Arc<dyn Backend>,
    subscriber: Subscriber,
    stop: CancellationToken,
) {
    let responder = Responder::new(backend);
    while !stop.is_cancelled() {
        for request in receive(&subscriber, 10, Duration::from_millis(200)).await {
            let answer = Message::new(text(request.payload()).to_uppercase());
            if let Err(failed) = responder.reply(request.received(), answer).await {
                panic!("replying failed: {}", failed.error);
            }
            ack(request).await;
        }
    }
}
