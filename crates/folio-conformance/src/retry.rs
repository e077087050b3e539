//! The decisions of the convenient transaction API (`withTransaction`), as its specification
//! gives them, apart from the driver calls that [`crate::runner::TestRun`] makes:
//!
//! - an error from the callback aborts the transaction and is raised, unless it is labelled
//!   `TransientTransactionError` and the time limit has not passed, which retries the whole
//!   transaction ([`after_callback_error`]);
//! - a commit error labelled `UnknownTransactionCommitResult` retries the commit alone, unless
//!   it is a time limit (`MaxTimeMSExpired`, 50) or the time limit has passed; one labelled
//!   `TransientTransactionError` retries the whole transaction within the time limit; any other
//!   is raised ([`after_commit_error`]);
//! - a retry of the transaction first waits a jittered backoff that grows by half each attempt
//!   from 5 ms up to 500 ms ([`backoff`]), and is not made when the wait would end past the time
//!   limit ([`may_wait`]): the last error is raised instead;
//! - the time limit is 120 seconds from the first attempt ([`TIME_LIMIT`]).

use std::time::Duration;

/// How long `withTransaction` keeps retrying.
pub(crate) const TIME_LIMIT: Duration = Duration::from_secs(120);

/// The first backoff's upper bound before growth, in milliseconds.
const BACKOFF_INITIAL_MS: f64 = 5.0;
/// The largest backoff, in milliseconds.
const BACKOFF_MAX_MS: f64 = 500.0;
/// How much the backoff's bound grows per attempt.
const BACKOFF_GROWTH: f64 = 1.5;

/// The code of MaxTimeMSExpired, which never makes a commit retry.
pub(crate) const MAX_TIME_MS_EXPIRED: i32 = 50;

/// What an error carries that the retry decisions look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Labelled `TransientTransactionError`.
    pub transient: bool,
    /// Labelled `UnknownTransactionCommitResult`.
    pub unknown_commit_result: bool,
    /// A MaxTimeMSExpired error (also as a write concern error).
    pub max_time_expired: bool,
}

impl Failure {
    /// The labels and code of a driver error.
    pub(crate) fn of(e: &mongodb::error::Error) -> Failure {
        Failure {
            transient: e.contains_label("TransientTransactionError"),
            unknown_commit_result: e.contains_label("UnknownTransactionCommitResult"),
            max_time_expired: crate::runner::error_code(e) == Some(MAX_TIME_MS_EXPIRED),
        }
    }
}

/// What `withTransaction` does next after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Start the transaction again and rerun the callback.
    RetryTransaction,
    /// Send `commitTransaction` again.
    RetryCommit,
    /// Raise the error to the caller.
    Raise,
}

/// After the callback failed with `f`, `elapsed` after the first attempt started.
pub(crate) fn after_callback_error(f: Failure, elapsed: Duration) -> Next {
    if f.transient && elapsed < TIME_LIMIT { Next::RetryTransaction } else { Next::Raise }
}

/// After `commitTransaction` failed with `f`, `elapsed` after the first attempt started.
pub(crate) fn after_commit_error(f: Failure, elapsed: Duration) -> Next {
    let in_time = elapsed < TIME_LIMIT;
    if f.unknown_commit_result && !f.max_time_expired && in_time {
        Next::RetryCommit
    } else if f.transient && in_time {
        Next::RetryTransaction
    } else {
        Next::Raise
    }
}

/// The wait before the transaction's attempt `attempt` (1 for the first retry): `jitter` (in
/// [0, 1)) times a bound that starts at 7.5 ms and grows by half each attempt up to 500 ms.
pub(crate) fn backoff(attempt: i32, jitter: f64) -> Duration {
    let bound = (BACKOFF_INITIAL_MS * BACKOFF_GROWTH.powi(attempt.max(0))).min(BACKOFF_MAX_MS);
    Duration::from_secs_f64(jitter.clamp(0.0, 1.0) * bound / 1e3)
}

/// Whether a retry that first waits `backoff` still starts within the time limit.
pub(crate) fn may_wait(elapsed: Duration, backoff: Duration) -> bool {
    elapsed.saturating_add(backoff) < TIME_LIMIT
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSIENT: Failure =
        Failure { transient: true, unknown_commit_result: false, max_time_expired: false };
    const UNKNOWN: Failure =
        Failure { transient: false, unknown_commit_result: true, max_time_expired: false };
    const PLAIN: Failure =
        Failure { transient: false, unknown_commit_result: false, max_time_expired: false };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_callback_error_retries_only_when_transient_and_in_time() {
        assert_eq!(after_callback_error(TRANSIENT, secs(0)), Next::RetryTransaction);
        assert_eq!(after_callback_error(TRANSIENT, secs(119)), Next::RetryTransaction);
        assert_eq!(after_callback_error(TRANSIENT, secs(120)), Next::Raise);
        assert_eq!(after_callback_error(PLAIN, secs(0)), Next::Raise);
        // An unknown commit result from inside the callback is not a reason to retry.
        assert_eq!(after_callback_error(UNKNOWN, secs(0)), Next::Raise);
    }

    #[test]
    fn an_unknown_commit_result_retries_the_commit_unless_a_time_limit() {
        assert_eq!(after_commit_error(UNKNOWN, secs(1)), Next::RetryCommit);
        // Labelled both ways, the commit is retried before the transaction.
        let both = Failure { transient: true, ..UNKNOWN };
        assert_eq!(after_commit_error(both, secs(1)), Next::RetryCommit);
        // MaxTimeMSExpired never retries the commit; a transient label still retries the
        // transaction.
        let max_time = Failure { max_time_expired: true, ..UNKNOWN };
        assert_eq!(after_commit_error(max_time, secs(1)), Next::Raise);
        let max_time_transient = Failure { transient: true, ..max_time };
        assert_eq!(after_commit_error(max_time_transient, secs(1)), Next::RetryTransaction);
        // Past the time limit everything is raised.
        assert_eq!(after_commit_error(UNKNOWN, secs(120)), Next::Raise);
        assert_eq!(after_commit_error(both, secs(121)), Next::Raise);
    }

    #[test]
    fn a_transient_commit_error_retries_the_transaction_in_time() {
        assert_eq!(after_commit_error(TRANSIENT, secs(5)), Next::RetryTransaction);
        assert_eq!(after_commit_error(TRANSIENT, secs(120)), Next::Raise);
        assert_eq!(after_commit_error(PLAIN, secs(0)), Next::Raise);
    }

    #[test]
    fn the_backoff_grows_by_half_up_to_half_a_second() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        assert_eq!(backoff(1, 0.0), Duration::ZERO);
        assert!((ms(backoff(1, 1.0)) - 7.5).abs() < 1e-9);
        assert!((ms(backoff(2, 1.0)) - 11.25).abs() < 1e-9);
        assert!((ms(backoff(3, 0.5)) - 8.4375).abs() < 1e-9);
        assert!((ms(backoff(20, 1.0)) - 500.0).abs() < 1e-9);
        let mut previous = Duration::ZERO;
        for attempt in 1..40 {
            let b = backoff(attempt, 0.999);
            assert!(b >= previous && ms(b) < 500.0, "attempt {attempt}: {b:?}");
            previous = b;
        }
        // A jitter outside [0, 1) is clamped rather than trusted.
        assert!(ms(backoff(1, 7.0)) <= 7.5 + 1e-9);
        assert_eq!(backoff(1, -1.0), Duration::ZERO);
    }

    #[test]
    fn a_retry_waits_only_when_it_still_starts_in_time() {
        assert!(may_wait(secs(0), Duration::from_millis(500)));
        assert!(may_wait(secs(119), Duration::from_millis(999)));
        assert!(!may_wait(secs(119), Duration::from_millis(1000)));
        assert!(!may_wait(secs(120), Duration::ZERO));
        assert!(!may_wait(Duration::MAX, Duration::MAX));
    }

    #[test]
    fn failures_read_the_time_limit_code() {
        assert_eq!(Failure::of(&mongodb::error::Error::custom("x")), PLAIN);
        let command = |code: i32| {
            let e: mongodb::error::CommandError =
                bson::deserialize_from_document(bson::doc! {"code": code, "errmsg": "x"})
                    .expect("a command error");
            mongodb::error::Error::from(mongodb::error::ErrorKind::Command(e))
        };
        assert_eq!(Failure::of(&command(50)), Failure { max_time_expired: true, ..PLAIN });
        assert_eq!(Failure::of(&command(112)), PLAIN);
    }
}
