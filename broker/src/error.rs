//! AMQP errors carry their reply code, so every failure knows how it is reported to the client:
//! soft codes close the channel, hard codes close the connection.

use std::fmt;

/// AMQP 0-9-1 reply codes used by Warren (names as RabbitMQ prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    ConnectionForced = 320,
    ContentTooLarge = 311,
    NoRoute = 312,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The upper-case name RabbitMQ puts in front of reply texts.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the whole connection; soft ones only the channel.
    pub fn is_hard(self) -> bool {
        !matches!(
            self,
            ReplyCode::ContentTooLarge
                | ReplyCode::NoRoute
                | ReplyCode::AccessRefused
                | ReplyCode::NotFound
                | ReplyCode::ResourceLocked
                | ReplyCode::PreconditionFailed
        )
    }
}

/// An AMQP-level failure: the code, RabbitMQ-style text and the method that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// What kind of failure, and whether it is a channel or connection error.
    pub code: ReplyCode,
    /// `NAME - detail`, as RabbitMQ formats reply texts.
    pub text: String,
    /// Class id of the method that failed (0 when not caused by a method).
    pub class_id: u16,
    /// Method id of the method that failed.
    pub method_id: u16,
}

impl AmqpError {
    /// A new error; `detail` is prefixed with the code's name.
    pub fn new(code: ReplyCode, detail: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", code.name(), detail);
        if text.len() > 255 {
            let mut cut = 255;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
        }
    }

    /// Records which method failed (class and method ids go back in the close frame).
    pub fn during(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// 404 NOT_FOUND.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotFound, detail)
    }
    /// 406 PRECONDITION_FAILED.
    pub fn precondition(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::PreconditionFailed, detail)
    }
    /// 403 ACCESS_REFUSED.
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::AccessRefused, detail)
    }
    /// 405 RESOURCE_LOCKED.
    pub fn resource_locked(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ResourceLocked, detail)
    }
    /// 530 NOT_ALLOWED.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotAllowed, detail)
    }
    /// 540 NOT_IMPLEMENTED.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotImplemented, detail)
    }
    /// 503 COMMAND_INVALID.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::CommandInvalid, detail)
    }
    /// 504 CHANNEL_ERROR.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ChannelError, detail)
    }
    /// 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, detail)
    }
    /// 541 INTERNAL_ERROR.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::InternalError, detail)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.code.code())
    }
}

impl std::error::Error for AmqpError {}

/// Result of an operation that fails with an AMQP error.
pub type AmqpResult<T> = Result<T, AmqpError>;
