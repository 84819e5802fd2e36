//! The code sandbox against hostile code: each attack contained, each limit hit, and the
//! sandbox usable afterwards. Needs bubblewrap (`scripts/setup.sh` installs it) and
//! /usr/bin/python3.

use std::time::{Duration, Instant};

use peregrine_tools::{PythonSandbox, SandboxConfig, SandboxLimits};

fn sandbox() -> PythonSandbox {
    PythonSandbox::new(SandboxConfig {
        limits: SandboxLimits {
            wall: Duration::from_secs(5),
            cpu_secs: 4,
            memory_bytes: 256 << 20,
            output_bytes: 4096,
            scratch_bytes: 8 << 20,
            file_bytes: 4 << 20,
            ..SandboxLimits::default()
        },
        ..SandboxConfig::default()
    })
}

async fn run(s: &mut PythonSandbox, code: &str) -> (String, Option<String>) {
    let out = s.run(code).await.expect("the sandbox runs");
    (out.output, out.error)
}

#[tokio::test]
async fn state_persists_and_a_bare_expression_prints() {
    let mut s = sandbox();
    let (out, err) = run(&mut s, "import math\nx = math.sqrt(12345)\nx").await;
    assert_eq!(err, None);
    assert!(out.starts_with("111.108"), "{out}");
    let (out, _) = run(&mut s, "print(round(x, 1))").await;
    assert_eq!(out, "111.1\n");
    let (out, err) = run(&mut s, "1/0").await;
    assert!(err.unwrap().contains("ZeroDivisionError"));
    assert!(out.contains("Traceback"), "{out}");
}

/// Code whose output must show the attack failed, with what it must print.
const CONTAINED: &[(&str, &str, &str)] = &[
    ("read /etc/shadow", "print(open('/etc/shadow').read())", "FileNotFoundError"),
    ("read /etc/passwd", "print(open('/etc/passwd').read())", "FileNotFoundError"),
    ("list /", "import os; print(sorted(os.listdir('/')))", "['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'tmp', 'usr']"),
    ("/etc holds only matplotlib's and fontconfig's config and the alternatives links", "import os; print(sorted(os.listdir('/etc')))", "['alternatives', 'fonts', 'matplotlibrc']"),
    ("the server's home", "import os; print(os.path.exists('/root'), os.path.exists('/home'))", "False False"),
    ("environment", "import os; print(set(os.environ) <= {'HOME', 'MPLBACKEND', 'PATH', 'PWD', 'LC_CTYPE'})", "True"),
    ("pid 1's environment", "print(repr(open('/proc/1/environ').read()))", "''"),
    ("processes visible", "import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]) < 5)", "True"),
    ("user", "import os; print(os.getuid(), os.getgid())", "65534 65534"),
    ("write outside /tmp", "open('/usr/x', 'w')", "OSError"),
    ("network: outside", "import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)", "OSError"),
    ("network: DNS", "import socket; socket.getaddrinfo('example.com', 80)", "gaierror"),
    ("new user namespace", "import os; os.unshare(os.CLONE_NEWUSER)", "Error"),
    ("mount", "import ctypes; libc = ctypes.CDLL(None); print(libc.mount(b'none', b'/usr', b'tmpfs', 0, None))", "-1"),
    ("ptrace pid 1 (the sandbox's own init) gives nothing outside", "import ctypes; libc = ctypes.CDLL(None); libc.ptrace(16, 1, 0, 0); print(repr(open('/proc/1/environ').read()), sorted(__import__('os').listdir('/proc/1/root/')) if False else '')", "''"),
    ("signal pid 1 (the sandbox's own init; the server is not visible)", "import os, signal; os.kill(1, signal.SIGKILL); print('sent')", "sent"),
    ("chroot", "import os; os.chroot('/tmp')", "PermissionError"),
    ("raise the memory limit", "import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "ValueError"),
    ("symlink to the host", "import os; os.symlink('/etc/shadow', '/tmp/s'); print(open('/tmp/s').read())", "FileNotFoundError"),
    ("proc root of pid 1 is the sandbox's",
        "import os; print(sorted(os.listdir('/proc/1/root/')))",
        "['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'tmp', 'usr']"
    ),
];

#[tokio::test]
async fn attacks_are_contained() {
    let mut s = sandbox();
    for (name, code, expected) in CONTAINED {
        let (out, err) = run(&mut s, code).await;
        let all = format!("{out}{}", err.unwrap_or_default());
        assert!(
            all.contains(expected),
            "{name}: expected {expected:?} in {all:?}"
        );
    }
}

#[tokio::test]
async fn the_memory_limit_raises_and_the_sandbox_goes_on() {
    let mut s = sandbox();
    let (_, err) = run(&mut s, "x = bytearray(1 << 30)").await;
    assert!(err.unwrap().contains("MemoryError"));
    let (out, _) = run(&mut s, "print('alive')").await;
    assert_eq!(out, "alive\n");
}

#[tokio::test]
async fn an_infinite_loop_hits_the_wall_time_and_the_next_call_starts_afresh() {
    let mut s = sandbox();
    run(&mut s, "kept = 1").await;
    let t0 = Instant::now();
    let (_, err) = run(&mut s, "while True: pass").await;
    assert!(t0.elapsed() < Duration::from_secs(8));
    let err = err.unwrap();
    assert!(err.contains("wall time") || err.contains("CPU"), "{err}");
    let (out, err) = run(&mut s, "print('kept' in globals())").await;
    assert_eq!(err, None);
    assert!(
        out.contains("state is lost") && out.ends_with("False\n"),
        "{out}"
    );
}

#[tokio::test]
async fn a_fork_bomb_is_stopped() {
    let mut s = sandbox();
    let t0 = Instant::now();
    let (_, err) = run(&mut s, "import os\nwhile True:\n    os.fork()").await;
    assert!(err.is_some());
    assert!(t0.elapsed() < Duration::from_secs(8));
    let (out, _) = run(&mut s, "print(1)").await;
    assert!(out.ends_with("1\n"), "{out}");
}

#[tokio::test]
async fn output_and_disk_are_capped() {
    let mut s = sandbox();
    let (out, _) = run(&mut s, "print('x' * 100000)").await;
    assert!(
        out.len() < 4200 && out.contains("output cut at 4096 bytes"),
        "{}",
        out.len()
    );
    let (_, err) = run(&mut s, "open('/tmp/big', 'wb').write(b'0' * (6 << 20))").await;
    assert!(err.is_some(), "a 6 MiB file over the 4 MiB file limit");
    let code =
        "import os\nfor i in range(4):\n    open(f'/tmp/f{i}', 'wb').write(b'0' * (3 << 20))";
    let (_, err) = run(&mut s, code).await;
    let err = err.unwrap_or_default();
    assert!(
        err.contains("No space left"),
        "the 8 MiB scratch is full: {err}"
    );
    let (out, _) = run(&mut s, "print('alive')").await;
    assert_eq!(out, "alive\n");
}

#[tokio::test]
async fn the_hosts_loopback_is_out_of_reach() {
    // A port the server's machine listens on, on its loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = sandbox();
    let code = format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)");
    let (_, err) = run(&mut s, &code).await;
    assert!(
        err.unwrap().contains("Connection refused"),
        "the sandbox has a loopback of its own"
    );
}

#[tokio::test]
async fn host_processes_cannot_be_named_or_traced() {
    let host_pid = std::process::id();
    let mut s = sandbox();
    let code = format!(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         print(libc.ptrace(16, {host_pid}, 0, 0), ctypes.get_errno())\n\
         try:\n    os.kill({host_pid}, 0)\nexcept OSError as e:\n    print(type(e).__name__)"
    );
    let (out, _) = run(&mut s, &code).await;
    // ESRCH (3): outside the sandbox's pid namespace, the server does not exist.
    assert_eq!(out, "-1 3\nProcessLookupError\n");
}

#[tokio::test]
async fn the_cpu_time_limit_stops_a_busy_process_before_the_wall_time() {
    let mut s = PythonSandbox::new(SandboxConfig {
        limits: SandboxLimits {
            wall: Duration::from_secs(20),
            cpu_secs: 1,
            ..SandboxLimits::default()
        },
        ..SandboxConfig::default()
    });
    let t0 = Instant::now();
    let (_, err) = run(&mut s, "while True: pass").await;
    // Stopped by the CPU limit (about 1 s of CPU), far before the 20 s wall time.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let err = err.unwrap();
    assert!(err.contains("CPU time"), "{err}");
    let (out, _) = run(&mut s, "print('again')").await;
    assert!(out.ends_with("again\n"), "{out}");
}

#[tokio::test]
async fn matplotlib_figures_come_back_as_pngs() {
    // scripts/setup.sh installs Debian's python3-matplotlib.
    let mut s = PythonSandbox::new(SandboxConfig::default());
    let out = s
        .run("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\nprint('drawn')")
        .await
        .unwrap();
    assert_eq!(
        (out.output.as_str(), out.error.as_deref()),
        ("drawn\n", None)
    );
    assert_eq!(out.images.len(), 1);
    // A PNG's signature, base64-encoded.
    assert!(
        out.images[0].starts_with("iVBORw0KGgo"),
        "{}",
        &out.images[0][..16]
    );
    // Figures are closed once returned.
    let again = s.run("print(len(plt.get_fignums()))").await.unwrap();
    assert_eq!((again.output.as_str(), again.images.len()), ("0\n", 0));
}
