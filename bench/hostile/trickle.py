"""A gRPC-Web request whose body comes a byte a second: when, and how, the daemon
answers. Usage: trickle.py HOST:PORT"""
import socket, sys, time
host, port = sys.argv[1].split(":")
s = socket.create_connection((host, int(port)))
s.sendall(f"POST /streamhandler.v1.StreamHandler/ListServices HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 40\r\n\r\n".encode())
t = time.time(); s.settimeout(1.0); answer = b""
for i in range(40):
    try:
        s.sendall(b"\x00")
    except OSError:
        break
    try:
        chunk = s.recv(4096)
        answer += chunk
        if b"grpc-status" in answer or not chunk: break
    except socket.timeout:
        pass
print(f"after {time.time()-t:.1f} s of a byte a second:", [l for l in answer.decode(errors='replace').splitlines() if l.startswith('grpc')])
