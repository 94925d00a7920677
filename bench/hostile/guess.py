"""15,000 wrong tokens for /metrics on one HTTPS connection: how many the daemon
answers, and how many it paces (429). Usage: guess.py HOST:PORT CA"""
import http.client, ssl, sys, time
host, port = sys.argv[1].split(":")
c = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=sys.argv[2]))
codes = {}; t = time.time()
for i in range(15000):
    c.request("GET", "/metrics", headers={"authorization": f"Bearer guess{i}"}); r = c.getresponse(); r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
print(f"15,000 guesses on one connection in {time.time()-t:.2f} s: {codes}")
