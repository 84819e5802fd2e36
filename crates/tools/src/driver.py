# Runs inside the sandbox: reads one JSON request a line ({"code": ...}) on stdin, runs the
# code in one namespace kept for the whole process (variables persist between calls), and
# answers one JSON line ({"output": ..., "error": ...}) on a private copy of stdout.
# Output of the code (print, os.system, subprocesses) goes to an in-memory capture file
# (a memfd, so a full scratch disk cannot break it; its size is bounded by the file-size
# limit), cut at the output limit. A bare last expression prints its repr, as in a notebook.
# Figures the code left open in matplotlib come back as base64 PNGs ({"images": [...]}).
import ast, base64, io, json, os, resource, sys, traceback

limits = json.loads(sys.argv[1])
for name, value in (("RLIMIT_AS", limits["memory"]), ("RLIMIT_CPU", limits["cpu"]),
                    ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_FSIZE", limits["file"]),
                    ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))
MAX_OUT = limits["output"]
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 512 * 1024

proto = os.fdopen(os.dup(1), "w", buffering=1)
namespace = {"__name__": "__main__"}
DRIVER_PID = os.getpid()


def run(code):
    capture = os.memfd_create("output")
    os.dup2(capture, 1)
    os.dup2(capture, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = sys.stdout
    error = None
    try:
        tree = ast.parse(code, "<code>", "exec")
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body.pop()
        exec(compile(tree, "<code>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<code>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    except BaseException as e:  # noqa: B036 - the code's own SystemExit/KeyboardInterrupt too
        if isinstance(e, MemoryError):
            error = "MemoryError: the memory limit was reached"
        try:
            traceback.print_exc()
        except BaseException:
            pass
        error = error or f"{type(e).__name__}: {e}"
    if os.getpid() != DRIVER_PID:
        # A process the code forked got here: only the driver answers.
        os._exit(0)
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        data = os.pread(capture, MAX_OUT + 1, 0)
    except OSError:
        data = b""
    os.close(capture)
    text = data[:MAX_OUT].decode("utf-8", "replace")
    if len(data) > MAX_OUT:
        text += "\n[output cut at %d bytes]" % MAX_OUT
    return text, error


def figures():
    """PNGs of the figures left open (then closed), when the code used matplotlib."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    try:
        for num in plt.get_fignums()[:MAX_IMAGES]:
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            if buf.tell() <= MAX_IMAGE_BYTES:
                images.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        plt.close("all")
    except Exception:
        pass
    return images


for line in sys.stdin:
    request = json.loads(line)
    output, error = run(request["code"])
    proto.write(json.dumps({"output": output, "error": error, "images": figures()}) + "\n")
