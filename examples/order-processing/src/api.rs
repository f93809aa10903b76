//! The HTTP API: `POST /orders` places an order, `GET /orders/{id}` shows its status.
//!
//! `POST /orders` answers `202 Accepted` with the order id once the orders topic has
//! durably accepted the order, and not before: the client's id is a promise that the
//! order will be processed. The work itself happens later, in the workers.
//!
//! Errors are JSON objects `{"error": "..."}` that say what to fix: `400` for a body that
//! is not JSON or an id that is not a UUID, `415` without a JSON content type, `422` for
//! JSON of the wrong shape or values out of range, `404` for an unknown order, `503` if
//! the queue refused the order (nothing was accepted; try again).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::{error, trace, warn};
use uuid::Uuid;
use wharf::{Message, PublishError, Publisher};

use crate::order::{ORDER_ID_ATTRIBUTE, OrderPlaced, OrderRequest, Status};
use crate::orders::{OrderStore, OrderView};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The order statuses.
    pub orders: OrderStore,
    /// The orders topic.
    pub publisher: Publisher,
}

/// The body of a `202 Accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The new order's id.
    pub id: Uuid,
    /// Always `accepted`.
    pub status: Status,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to fix.
    pub error: String,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(show_order))
        .with_state(state)
}

async fn place_order(
    State(state): State<ApiState>,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    request.validate().map_err(ApiError::Invalid)?;
    let id = Uuid::now_v7();

    // Recorded before publishing, so a reply can never arrive for an order the store
    // does not know yet.
    state.orders.record(id, &request).await?;
    let message = Message::json(&OrderPlaced::new(id, request))
        .map_err(ApiError::Encode)?
        .with_attribute(ORDER_ID_ATTRIBUTE, id.to_string());

    if let Err(refused) = state.publisher.publish(message).await {
        forget(&state.orders, id).await;
        return Err(ApiError::Queue(refused));
    }
    mark_accepted(&state.orders, id).await;

    let location = format!("/orders/{id}");
    let body = Accepted {
        id,
        status: Status::Accepted,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn forget(orders: &OrderStore, id: Uuid) {
    if let Err(failure) = orders.forget(id).await {
        warn!(order.id = %id, error = %failure, "could not remove a refused order");
    }
}

/// The queue has the order whatever happens here, so a failure only leaves the status
/// at `pending` until a worker moves it on.
async fn mark_accepted(orders: &OrderStore, id: Uuid) {
    match orders.advance(id, Status::Accepted, None).await {
        Ok(_) => trace!(order.id = %id, "accepted"),
        Err(failure) => warn!(order.id = %id, error = %failure, "could not mark order accepted"),
    }
}

async fn show_order(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::BadId(id))?;

    let order = state.orders.get(id).await?;
    order.map(Json).ok_or(ApiError::NotFound(id))
}

/// Why a request failed, and the response that says so.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON expected.
    #[error("{}", .0.body_text())]
    Body(#[from] JsonRejection),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The path's id is not a UUID.
    #[error("order id `{0}` is not a UUID")]
    BadId(String),
    /// No order has this id.
    #[error("no order with id {0}")]
    NotFound(Uuid),
    /// The queue refused the order.
    #[error("the order queue did not accept the order; nothing was accepted, try again")]
    Queue(#[source] PublishError),
    /// The order could not be encoded.
    #[error("the order could not be encoded")]
    Encode(#[source] wharf::Error),
    /// The database failed.
    #[error("the order store failed")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Body(rejection) => rejection.status(),
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadId(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Queue(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Encode(_) | ApiError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let cause = std::error::Error::source(&self).map(ToString::to_string);
            error!(status = status.as_u16(), error = %self, cause, "request failed");
        }

        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}
