//! Logging macros: defmt on the boards, the `log` crate in the std simulation, nothing in
//! host unit tests (defmt needs a global logger that a test binary does not have).
//!
//! With both features on, defmt wins. Format strings must suit both: `{}` for numbers and strings, `{:?}` for enums.
#![allow(unused_macros)]

macro_rules! log_with {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(all(feature = "defmt", not(test)))]
        ::defmt::$level!($s $(, $x)*);
        #[cfg(all(feature = "log", not(feature = "defmt"), not(test)))]
        ::log::$level!($s $(, $x)*);
        #[cfg(any(test, not(any(feature = "defmt", feature = "log"))))]
        {
            let _ = ($(&$x),*);
        }
    }};
}

macro_rules! trace {
    ($($t:tt)*) => { log_with!(trace, $($t)*) };
}
macro_rules! debug {
    ($($t:tt)*) => { log_with!(debug, $($t)*) };
}
macro_rules! info {
    ($($t:tt)*) => { log_with!(info, $($t)*) };
}
macro_rules! warn {
    ($($t:tt)*) => { log_with!(warn, $($t)*) };
}
macro_rules! error {
    ($($t:tt)*) => { log_with!(error, $($t)*) };
}
