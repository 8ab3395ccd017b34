//! A panic inside one reconcile stays with that reconcile. kube-runtime
//! polls every reconcile of a controller inside one task, so an unwinding
//! reconcile would otherwise end the controller, and with it the refreshes
//! of every client in every namespace.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Runs `work`; a panic in it comes back as its message instead of
/// unwinding further. What the panicking reconcile held (its client's
/// memory) is dropped by the caller, so no half-made state is reused.
pub async fn caught<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn a_panic_in_the_work_is_its_result_and_the_caller_goes_on() {
        let overflow = crate::controller::steps::contain::caught(async {
            // The sum that once stopped every controller.
            let every = std::hint::black_box(Duration::from_secs(9_999_999_999_999_999_999));
            SystemTime::now() + every
        })
        .await;
        let message = overflow.expect_err("the panic is caught");
        assert!(message.contains("overflow"), "{message}");
        let formatted =
            crate::controller::steps::contain::caught(async { panic!("bad {}", 7) }).await;
        assert_eq!(formatted.unwrap_err(), "bad 7");
        assert_eq!(super::caught(async { 5 }).await, Ok(5));
    }
}
