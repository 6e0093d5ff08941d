"""``pvhpc demo``: the whole path on embedded defaults, on a local cluster it starts itself."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from pvhpc import config as site_config
from pvhpc import paths
from pvhpc import runtime
from pvhpc.app import PvhpcApp
from pvhpc.cli.cluster_cmd import export_line
from pvhpc.localcluster.cluster import ClusterError, LocalCluster
from pvhpc.db.store import SchemaError
from pvhpc.client.wslink import WslinkClient, WslinkError


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run pvhpc end to end on a local Slurm cluster: launch a ParaView session and render an image",
        description=(
            "Starts (or reuses) the local Slurm cluster, installs the ParaViewWeb runtime, starts the pvhpc "
            "service on embedded defaults, asks it for a ParaView session exactly as a ParaViewWeb client does "
            "(POST /paraview/), connects to the session URL it returns with the secret, renders an image and "
            "saves it, then ends the session. With --serve the service keeps running afterwards. The cluster "
            "keeps running; stop it with 'pvhpc cluster stop'."
        ),
    )
    p.add_argument("--cluster-dir", default=None, help="local cluster directory (default: as 'pvhpc cluster')")
    p.add_argument("--port", type=int, default=8480, help="the service's port (default 8480)")
    p.add_argument("--partition", default="gpu", help="partition for the demo session (default gpu)")
    p.add_argument("--image", default="pvhpc-demo.jpg", help="where to save the rendered image")
    p.add_argument("--serve", action="store_true", help="keep the service running after the demo (Ctrl-C stops)")
    p.set_defaults(func=run)


async def _post_json(url: str, body: dict, method: str = "POST") -> tuple[int, dict]:
    request = HTTPRequest(url, method=method, body=json.dumps(body) if method == "POST" else None,
                          request_timeout=180, headers={"Content-Type": "text/plain"})
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, json.loads(response.body or b"{}")


async def _demo(args, cluster: LocalCluster) -> int:
    cfg = site_config.embedded_defaults(cluster.conf, listen=f"127.0.0.1:{args.port}")
    app = PvhpcApp(cfg)
    port = await app.start()
    base = f"http://{cfg.service.listen_host}:{port}"   # the login side's address where the nodes are hosts
    print(f"3. pvhpc service on {base} (database {app.ctx.store.safe_url})", flush=True)
    try:
        started = time.monotonic()
        print(f"4. POST {base}/paraview/ {{\"application\": \"paraview\", \"partition\": \"{args.partition}\"}} ...",
              flush=True)
        status, session = await _post_json(f"{base}/paraview/", {"application": "paraview",
                                                                  "partition": args.partition})
        if status != 200:
            print(f"pvhpc demo: the launcher answered {status}: {session.get('error')}", file=sys.stderr)
            return 1
        ready = time.monotonic() - started
        url = session["sessionURL"].replace("USE_HOST", f"{cfg.service.listen_host}:{port}")
        print(f"   session {session['id'][:8]}… ready in {ready:.1f} s: job {session['job_id']} on node "
              f"{session['node']}, server at the node's address {session['host']}:{session['port']}")
        print(f"5. connecting to {url} with the session's secret ...", flush=True)
        client = await WslinkClient.connect(url, session["secret"])
        try:
            await client.create_source("Sphere")
            image = await client.render((400, 300))
        finally:
            client.close()
        first_image = time.monotonic() - started
        Path(args.image).write_bytes(image)
        print(f"   first image {first_image:.1f} s after the request; saved to {args.image} ({len(image)} bytes)")
        if args.serve:
            print(f"\nServing on {base} (launcher: POST {base}/paraview/; API: {base}/api/v1/sessions). "
                  "Ctrl-C stops.", flush=True)
            await asyncio.Event().wait()
        status, ended = await _post_json(f"{base}/paraview/{session['id']}", {}, method="DELETE")
        print(f"6. DELETE /paraview/{session['id'][:8]}…: {ended.get('state')} ({ended.get('detail')})")
    finally:
        await app.stop()
    print(f"OK. Slurm's commands reach the local cluster with: {export_line(cluster)}")
    return 0


def run(args) -> int:
    cluster = LocalCluster(args.cluster_dir or paths.cluster_dir())
    try:
        print(f"1. local Slurm cluster in {cluster.dir} ...", flush=True)
        cluster.start()
        print(f"   on {cluster.slurm.describe()}; {cluster.describe_shape()}", flush=True)
        print(f"2. ParaViewWeb runtime in {paths.runtime_dir()} ...", flush=True)
        runtime.install(paths.runtime_dir())
        return asyncio.run(_demo(args, cluster))
    except (ClusterError, runtime.RuntimeProblem, SchemaError, WslinkError) as e:
        print(f"pvhpc demo: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pvhpc demo: {e}", file=sys.stderr)
        return 1
