//! Settings read at run time from the QEMU command line through semihosting
//! (SYS_GET_CMDLINE), so one ELF can be several devices: the device id from `-append "id=dev1"`
//! with `-kernel` (or `-semihosting-config enable=on,arg=fw,arg=id=dev1`), and any other
//! `KEY=VALUE` a board needs ([`with_arg`]). Reading it needs semihosting enabled (so does the
//! defmt log); nothing else here touches the host.

use app::text::truncated;
use protocol::PeerId;
use static_cell::StaticCell;

/// Room for the whole command line; QEMU puts the ELF path first.
const CMDLINE_MAX: usize = 256;

/// The value of the first `id=VALUE` argument, or `default` when there is none (or the
/// command line cannot be read). Cut to the protocol's 24 bytes; the result lives forever.
/// Call once.
pub fn device_id(default: &'static str) -> &'static str {
    static ID: StaticCell<PeerId> = StaticCell::new();
    let Some(found) = find_id() else {
        defmt::info!("no id= on the command line; device id {=str}", default);
        return default;
    };
    let id = ID.init(found);
    defmt::info!("device id {=str} from the command line", id.as_str());
    id.as_str()
}

fn find_id() -> Option<PeerId> {
    with_arg("id=", |id| id.map(truncated))
}

/// Calls `f` with the value of the first non-empty argument starting with `key` (`"port="`),
/// or `None` when there is none or the command line cannot be read.
pub fn with_arg<R>(key: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    let args = match semihosting::experimental::env::args::<CMDLINE_MAX>() {
        Ok(args) => args,
        Err(_) => {
            defmt::warn!("semihosting command line unreadable");
            return f(None);
        }
    };
    let value = (&args)
        .filter_map(Result::ok)
        .filter_map(|arg| arg.strip_prefix(key))
        .find(|value| !value.is_empty());
    f(value)
}
