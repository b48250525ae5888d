"""Interim Redis fixtures (standalone + 3x2 cluster on free loopback ports)."""
import subprocess, socket, time, tempfile, os, pytest, redis
def _free():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
@pytest.fixture(scope="session")
def _rs():
    p=_free(); d=tempfile.mkdtemp()
    pr=subprocess.Popen(["redis-server","--port",str(p),"--save","","--appendonly","no","--dir",d],stdout=subprocess.DEVNULL)
    time.sleep(0.3); yield f"redis://127.0.0.1:{p}/0"; pr.kill()
@pytest.fixture(scope="session")
def _rc():
    d=tempfile.mkdtemp(); ports=[]; procs=[]
    while len(ports)<6:
        p=_free()
        if p<55000: ports.append(p)
    for p in ports:
        procs.append(subprocess.Popen(["redis-server","--port",str(p),"--cluster-enabled","yes","--cluster-config-file",f"{d}/n{p}.conf","--save","","--appendonly","no","--dir",d],stdout=subprocess.DEVNULL))
    time.sleep(0.5)
    subprocess.run(["redis-cli","--cluster","create",*[f"127.0.0.1:{p}" for p in ports],"--cluster-replicas","1","--cluster-yes"],check=True,stdout=subprocess.DEVNULL)
    for _ in range(100):
        if b"cluster_state:ok" in subprocess.run(["redis-cli","-p",str(ports[0]),"cluster","info"],capture_output=True).stdout: break
        time.sleep(0.1)
    time.sleep(1)
    yield f"redis://127.0.0.1:{ports[0]}"
    for pr in procs: pr.kill()
@pytest.fixture
def redis_url(_rs):
    yield _rs; redis.Redis.from_url(_rs).flushall()
@pytest.fixture
def cluster_url(_rc):
    yield _rc
    c=redis.cluster.RedisCluster.from_url(_rc); c.flushall(target_nodes=c.PRIMARIES); c.close()
