//! The tokio runtime from a config's `threads`.

/// A runtime with every driver enabled: `threads` 1 runs everything on the calling thread
/// (no wake-up ever crosses threads: the cheapest per message), 0 one worker thread per
/// CPU, any other number that many.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_count_gives_a_runtime_of_that_kind() {
        use tokio::runtime::RuntimeFlavor;
        let one = runtime(1).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = runtime(2).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
        assert_eq!(
            runtime(0).unwrap().handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        // Timers and I/O work on the one-thread runtime (enable_all).
        one.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(1)).await });
    }
}
