//! The `mlbuild` command line.
//!
//! Parses arguments with clap (the doc comments in [`cli`] are the help text), finds the
//! workspace and the store, and dispatches to one handler per subcommand in `commands/`.
//! Exit codes are part of the interface; see [`exit`].

// Every command's output goes through `out`, so that a closed stdout ends mlbuild quietly
// instead of with std's panic. Defined before the modules, these shadow std's macros in
// all of them.
macro_rules! print {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::out::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}
// Unused today; defined so that one added later cannot bypass `out`.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::out::eprint(format_args!($($arg)*)) };
}
macro_rules! eprintln {
    () => { $crate::out::eprint(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::eprint(format_args!("{}\n", format_args!($($arg)*))) };
}

mod cli;
mod commands;
mod context;
mod dvc;
mod exit;
mod junit;
mod mlflow_client;
mod options;
mod out;
mod provenance;
mod report;
mod signing;
mod table;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // When this process is a sandbox's init, it never returns from here.
    mlbuild_sandbox::maybe_run_init();
    disable_transparent_huge_pages();
    let args = options::parse();
    miette::set_hook(Box::new(|_| {
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut opts = miette::MietteHandlerOpts::new()
            .color(on_terminal && std::env::var_os("NO_COLOR").is_none())
            .unicode(true);
        // Wrap to `COLUMNS` when it is set, to the terminal's width on a terminal, and not
        // at all otherwise: a label or path split across lines in a log cannot be grepped.
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|&c| c > 0);
        match (columns, on_terminal) {
            (Some(columns), _) => opts = opts.width(columns),
            (None, false) => opts = opts.wrap_lines(false),
            (None, true) => {}
        }
        Box::new(opts.build())
    }))
    .ok();
    out::run(|| match commands::run(args) {
        Ok(code) => code.into(),
        Err(failure) => {
            eprintln!("{:?}", failure.report);
            failure.code.into()
        }
    })
}

/// With transparent huge pages set to `always`, every fresh allocator arena faults in a
/// 2 MiB page the kernel must zero, though mlbuild touches a fraction of it: that zeroing
/// was a third of a 10,000-target no-op build. mlbuild's heap is small and short-lived, so
/// opting out costs nothing. Best effort: kernels without the setting just say no.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag on
    // this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
