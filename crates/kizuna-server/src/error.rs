use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kizuna_pipeline::PipelineError;
use kizuna_store::StoreError;
use kizuna_types::{Code, KizunaError, telemetry::Telemetry};

/// Every handler error: turns itself into a response with the one error shape.
#[derive(Debug)]
pub struct ApiError(pub KizunaError);

pub type ApiResult<T> = Result<T, ApiError>;

impl From<KizunaError> for ApiError {
    fn from(e: KizunaError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        Self(KizunaError::internal("a storage error occurred; nothing was changed"))
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Closed => Self(KizunaError::new(Code::Unavailable, "the server is shutting down")),
            PipelineError::NotDurable => {
                Self(KizunaError::new(Code::Unavailable, PipelineError::NotDurable.to_string()))
            }
            PipelineError::UnknownProfile(id) => {
                Self(KizunaError::new(Code::ProfileNotFound, format!("no profile has id {id}")))
            }
            PipelineError::Store(e) => {
                tracing::error!(error = %e, "write failed");
                Self(KizunaError::internal("the write failed; nothing from this request was stored"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Telemetry::RequestRejected { code: self.0.code.as_str() }.emit();
        (status, axum::Json(self.0)).into_response()
    }
}

pub fn invalid_param(field: &str, message: impl Into<String>) -> ApiError {
    ApiError(KizunaError::new(Code::InvalidParameter, message).with_field(field))
}
