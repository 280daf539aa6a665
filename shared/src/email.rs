//! The notification e-mail: subject, plain text and HTML for one [`crate::message::NotificationEvent`].
