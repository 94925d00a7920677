"""1,000 silent connections (one byte of a TLS hello, then nothing) from
127.0.0.2 to both listeners, then 130 renewed every 9 s, while `streamctl list` and an
HTTPS GET of the page are timed. Usage: tls.py GRPC_PORT HTTP_PORT CA TOKEN STREAMCTL SECONDS"""
import os, socket, subprocess, sys, threading, time, ssl, urllib.request

grpc_port, http_port, ca, token, streamctl, seconds = sys.argv[1:7]
grpc_port, http_port, seconds = int(grpc_port), int(http_port), float(seconds)
held = []
def silent(port, n):
    for _ in range(n):
        s = socket.socket(); s.bind(("127.0.0.2", 0))
        try:
            s.connect(("127.0.0.1", port)); s.send(b"\x16")
        except OSError:
            pass
        held.append(s)
silent(grpc_port, 1000); silent(http_port, 1000)
stop = time.time() + seconds
def renew():
    while time.time() < stop:
        silent(grpc_port, 130); silent(http_port, 130)
        time.sleep(9)
threading.Thread(target=renew, daemon=True).start()
ctx = ssl.create_default_context(cafile=ca)
env = dict(os.environ, STREAMD_ADDR=f"https://localhost:{grpc_port}", STREAMD_TLS_CA=ca, STREAMD_TOKEN=token)
lists, pages = [], []
while time.time() < stop:
    t = time.time(); out = subprocess.run([streamctl, "list"], env=env, capture_output=True, timeout=60)
    lists.append(time.time() - t); assert out.returncode == 0, out.stderr
    t = time.time(); urllib.request.urlopen(f"https://localhost:{http_port}/", context=ctx, timeout=60).read()
    pages.append(time.time() - t)
    time.sleep(0.2)
for name, xs in (("streamctl list", lists), ("HTTPS page", pages)):
    xs = sorted(x * 1000 for x in xs)
    print(f"{name}: {len(xs)} runs p50 {xs[len(xs)//2]:.1f} ms p99 {xs[len(xs)*99//100]:.1f} ms max {xs[-1]:.1f} ms")
