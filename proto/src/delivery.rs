//! Did a failed request reach its target? One typed answer and one failover
//! rule, shared by the node's write forwarding and the client's failover.
//!
//! A request that failed **before a connection existed** cannot have been
//! applied, so trying another node is safe even for a write, and a failure
//! after it is definite. Anything else (a reset connection, a timeout, an
//! answer lost on the way back) may have landed. The rule that follows, in
//! [`Failover`]: once an attempt may have landed, every later failure is
//! reported as indeterminate, never as a definite "not written".
//!
//! The decision is made from types, not from message text: tonic wraps every
//! error of the connect phase in [`tonic::ConnectError`], which stays in the
//! status's `source()` chain, and the node builds its own not-sent errors
//! (fault layer, unknown member) where they happen.

use std::error::Error as StdError;

/// Whether a failed attempt may have reached its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It cannot have arrived: no connection was made.
    NotSent,
    /// It may have arrived and been applied.
    MaybeDelivered,
}

impl Delivery {
    /// The delivery of a call that failed with `status`: `NotSent` when the
    /// failure happened while connecting (a [`tonic::ConnectError`] in its
    /// source chain).
    pub fn of_status(status: &tonic::Status) -> Delivery {
        Delivery::of_error(status)
    }

    /// The delivery of a call that failed with `err`, by walking its
    /// `source()` chain for a [`tonic::ConnectError`].
    pub fn of_error(err: &(dyn StdError + 'static)) -> Delivery {
        let mut next: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = next {
            if e.is::<tonic::ConnectError>() {
                return Delivery::NotSent;
            }
            next = e.source();
        }
        Delivery::MaybeDelivered
    }
}

/// The failover rule: tracks whether any failed attempt may have landed.
#[derive(Debug, Default, Clone)]
pub struct Failover {
    maybe_landed: Option<String>,
}

impl Failover {
    /// Records a failed attempt; `describe` says what happened, kept for
    /// the first attempt that may have landed.
    pub fn failed(&mut self, delivery: Delivery, describe: impl FnOnce() -> String) {
        if delivery == Delivery::MaybeDelivered {
            self.maybe_landed.get_or_insert_with(describe);
        }
    }

    /// The first attempt that may have landed, if any: when `Some`, a
    /// failure reported now must be indeterminate.
    pub fn maybe_landed(&self) -> Option<&str> {
        self.maybe_landed.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(tonic::ConnectError);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connect_error_anywhere_in_the_chain_means_not_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let outer = Outer(tonic::ConnectError(Box::new(refused)));
        assert_eq!(Delivery::of_error(&outer), Delivery::NotSent);
        // The same words without the type prove nothing.
        let text = std::io::Error::other("tcp connect error: connection refused");
        assert_eq!(Delivery::of_error(&text), Delivery::MaybeDelivered);
        assert_eq!(Delivery::of_status(&tonic::Status::unavailable("connection refused")), Delivery::MaybeDelivered);
    }

    #[tokio::test]
    async fn a_call_to_a_closed_port_is_not_sent() {
        // Bind and drop a listener so the port is closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let mut client = crate::v1::kv_client::KvClient::new(ch);
        let status = client.get(crate::v1::GetRequest::default()).await.unwrap_err();
        assert_eq!(Delivery::of_status(&status), Delivery::NotSent, "{status:?}");
    }

    #[test]
    fn after_an_attempt_that_may_have_landed_failures_stay_indeterminate() {
        let mut f = Failover::default();
        f.failed(Delivery::NotSent, || "refused".into());
        assert_eq!(f.maybe_landed(), None);
        f.failed(Delivery::MaybeDelivered, || "reset by n2".into());
        f.failed(Delivery::MaybeDelivered, || "reset by n3".into());
        f.failed(Delivery::NotSent, || "refused".into());
        assert_eq!(f.maybe_landed(), Some("reset by n2"));
    }
}
