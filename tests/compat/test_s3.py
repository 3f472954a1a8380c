"""The S3 API through the real aws-cli, boto3 and curl: buckets, objects, multipart uploads,
versioning, presigned URLs, IAM, encryption at rest, crashes and bad input."""

import hashlib
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

MB = 1024 * 1024


def write_random(path, size, seed=1):
    """A file of `size` pseudo-random (incompressible) bytes, quickly."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MB // 32)
    block = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(block[:4096])) * (MB // 4096)
    with open(path, "wb") as f:
        left, n = size, 0
        while left > 0:
            chunk = hashlib.sha256(f"{seed}-{n}".encode()).digest() + block[32:]
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
            n += 1
    return path


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


def raw(server, method, path, body=b"", headers=None, creds=None, sign=True):
    """A raw S3 request (signed by botocore's S3 SigV4 signer unless `sign` is false):
    returns (status, body bytes, headers)."""
    creds = creds or server.root
    req = botocore.awsrequest.AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    if sign:
        req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
        botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(creds.key, creds.secret), "s3", "us-east-1").add_auth(req)
    r = urllib.request.Request(server.url + path, data=body or None, headers=dict(req.headers), method=method)
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def error_code(body):
    import re

    m = re.search(rb"<Code>([^<]+)</Code>", body)
    return m.group(1).decode() if m else None


def blob_bytes(server):
    """Every byte Slipway keeps outside the database, concatenated."""
    out = b""
    for p in sorted((server.data_dir / "blobs").rglob("*")):
        if p.is_file():
            out += p.read_bytes()
    return out


def test_cli_round_trip_small_and_multipart(server, workdir):
    server.aws("s3", "mb", "s3://artifacts")
    small = workdir / "small.txt"
    small.write_bytes(b"hello slipway\n" * 73)  # ~1 KB
    big = write_random(workdir / "big.bin", 200 * MB)
    server.aws("s3", "cp", str(small), "s3://artifacts/dir/small.txt")
    server.aws("s3", "cp", str(big), "s3://artifacts/dir/big.bin")

    listing = subprocess.run(["aws", "s3", "ls", "--recursive", "s3://artifacts"], capture_output=True, text=True,
                             env=server.env(), check=True).stdout
    sizes = {line.split()[3]: int(line.split()[2]) for line in listing.splitlines()}
    assert sizes == {"dir/small.txt": small.stat().st_size, "dir/big.bin": 200 * MB}
    top = subprocess.run(["aws", "s3", "ls", "s3://artifacts/"], capture_output=True, text=True,
                         env=server.env(), check=True).stdout
    assert top.split() == ["PRE", "dir/"]

    head = server.aws("s3api", "head-object", "--bucket", "artifacts", "--key", "dir/big.bin")
    assert head["ContentLength"] == 200 * MB and head["ServerSideEncryption"] == "AES256"
    assert head["ETag"].strip('"').endswith("-25")  # aws-cli's 8 MiB parts
    small_head = server.aws("s3api", "head-object", "--bucket", "artifacts", "--key", "dir/small.txt")
    assert small_head["ETag"] == '"%s"' % hashlib.md5(small.read_bytes()).hexdigest()

    back = workdir / "back.bin"
    server.aws("s3", "cp", "s3://artifacts/dir/big.bin", str(back))
    assert digest(back) == digest(big)

    # Ranged GET, across the boundary between two multipart parts.
    out = workdir / "range.bin"
    got = server.aws("s3api", "get-object", "--bucket", "artifacts", "--key", "dir/big.bin",
                     "--range", f"bytes={8 * MB - 10}-{8 * MB + 9}", str(out))
    assert got["ContentRange"] == f"bytes {8 * MB - 10}-{8 * MB + 9}/{200 * MB}"
    with open(big, "rb") as f:
        f.seek(8 * MB - 10)
        assert out.read_bytes() == f.read(20)
    err = server.aws("s3api", "get-object", "--bucket", "artifacts", "--key", "dir/small.txt",
                     "--range", "bytes=5000-6000", str(out), check=False)
    assert err.code == "InvalidRange"

    # sync uploads only what changed; rm --recursive empties the bucket; rb removes it.
    tree = workdir / "tree"
    (tree / "a").mkdir(parents=True)
    for name in ["a/1.txt", "a/2.txt", "3 with space+plus.txt", "ünï.txt"]:
        (tree / name).write_text(name)
    server.aws("s3", "sync", str(tree), "s3://artifacts/tree")
    again = subprocess.run(["aws", "s3", "sync", str(tree), "s3://artifacts/tree"], capture_output=True, text=True,
                           env=server.env(), check=True).stdout
    assert again.strip() == ""
    keys = [o["Key"] for o in server.client("s3").list_objects_v2(Bucket="artifacts", Prefix="tree/")["Contents"]]
    assert keys == sorted(["tree/a/1.txt", "tree/a/2.txt", "tree/3 with space+plus.txt", "tree/ünï.txt"])
    err = server.aws("s3", "rb", "s3://artifacts", check=False)
    assert "BucketNotEmpty" in err.stderr
    server.aws("s3", "rm", "--recursive", "s3://artifacts")
    assert server.client("s3").list_objects_v2(Bucket="artifacts")["KeyCount"] == 0
    server.aws("s3", "rb", "s3://artifacts")
    assert server.aws("s3api", "list-buckets")["Buckets"] == []
    # Every blob went with its object.
    assert [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()] == []


def test_versioning(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="pipeline-artifacts")
    assert "Status" not in s3.get_bucket_versioning(Bucket="pipeline-artifacts")
    s3.put_bucket_versioning(Bucket="pipeline-artifacts", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="pipeline-artifacts")["Status"] == "Enabled"
    v1 = s3.put_object(Bucket="pipeline-artifacts", Key="app.zip", Body=b"version one")["VersionId"]
    v2 = s3.put_object(Bucket="pipeline-artifacts", Key="app.zip", Body=b"version two")["VersionId"]
    assert v1 != v2 and len(v1) == 32
    assert s3.get_object(Bucket="pipeline-artifacts", Key="app.zip")["Body"].read() == b"version two"
    old = s3.get_object(Bucket="pipeline-artifacts", Key="app.zip", VersionId=v1)
    assert (old["Body"].read(), old["VersionId"]) == (b"version one", v1)
    versions = s3.list_object_versions(Bucket="pipeline-artifacts")
    assert [(v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [(v2, True), (v1, False)]

    marker = s3.delete_object(Bucket="pipeline-artifacts", Key="app.zip")
    assert marker["DeleteMarker"] is True
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="pipeline-artifacts", Key="app.zip")
    listing = s3.list_object_versions(Bucket="pipeline-artifacts")
    assert [m["VersionId"] for m in listing["DeleteMarkers"]] == [marker["VersionId"]]
    assert s3.list_objects_v2(Bucket="pipeline-artifacts")["KeyCount"] == 0
    assert s3.get_object(Bucket="pipeline-artifacts", Key="app.zip", VersionId=v2)["Body"].read() == b"version two"
    # Removing the marker brings the object back.
    s3.delete_object(Bucket="pipeline-artifacts", Key="app.zip", VersionId=marker["VersionId"])
    assert s3.get_object(Bucket="pipeline-artifacts", Key="app.zip")["VersionId"] == v2
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.get_object(Bucket="pipeline-artifacts", Key="app.zip", VersionId="0" * 32)
    assert e.value.response["Error"]["Code"] == "NoSuchVersion"

    # Suspended: writes replace the single "null" version, older versions stay.
    s3.put_bucket_versioning(Bucket="pipeline-artifacts", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="pipeline-artifacts", Key="app.zip", Body=b"null one")
    s3.put_object(Bucket="pipeline-artifacts", Key="app.zip", Body=b"null two")
    ids = [v["VersionId"] for v in s3.list_object_versions(Bucket="pipeline-artifacts")["Versions"]]
    assert ids == ["null", v2, v1]
    # Pagination over versions.
    pages = s3.get_paginator("list_object_versions").paginate(Bucket="pipeline-artifacts", PaginationConfig={"PageSize": 1})
    assert [v["VersionId"] for p in pages for v in p.get("Versions", [])] == ["null", v2, v1]


def test_presigned_url_with_curl(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="notes/readme.txt", Body=b"presigned content")
    url = subprocess.run(["aws", "s3", "presign", "s3://shared/notes/readme.txt", "--expires-in", "300"],
                         capture_output=True, text=True, env=server.env(), check=True).stdout.strip()
    got = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url], capture_output=True, text=True, check=True).stdout
    assert got == "presigned content\n200"
    tampered = url.replace("notes/readme.txt", "notes/other.txt")
    got = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", tampered], capture_output=True, text=True).stdout
    assert "SignatureDoesNotMatch" in got and got.endswith("403")
    # A presigned PUT (boto3) with curl.
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "shared", "Key": "up.txt"}, ExpiresIn=60)
    subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type:", "--data-binary", "uploaded by curl", put_url],
                   check=True)
    assert s3.get_object(Bucket="shared", Key="up.txt")["Body"].read() == b"uploaded by curl"
    # Expired.
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "shared", "Key": "up.txt"}, ExpiresIn=1)
    time.sleep(2.1)
    got = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", short], capture_output=True, text=True).stdout
    assert "AccessDenied" in got and got.endswith("403")
    # Unsigned requests are anonymous: denied.
    status, body, _ = raw(server, "GET", "/shared/up.txt", sign=False)
    assert (status, error_code(body)) == (403, "AccessDenied")


def test_iam_policies(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="team")
    s3.put_object(Bucket="team", Key="secret.txt", Body=b"top secret")
    writer = server.user("writer", {"Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:ListBucket"], "Resource": ["arn:aws:s3:::team", "arn:aws:s3:::team/*"]},
    ]})
    err = server.aws("s3api", "get-object", "--bucket", "team", "--key", "secret.txt", "/dev/null", creds=writer, check=False)
    assert err.code == "AccessDenied"
    assert "s3:GetObject" in err.message and "arn:aws:s3:::team/secret.txt" in err.message
    server.aws("s3api", "put-object", "--bucket", "team", "--key", "in/new.txt", creds=writer)
    keys = [o["Key"] for o in server.aws("s3api", "list-objects-v2", "--bucket", "team", creds=writer)["Contents"]]
    assert keys == ["in/new.txt", "secret.txt"]
    assert server.aws("s3api", "delete-object", "--bucket", "team", "--key", "secret.txt", creds=writer, check=False).code == "AccessDenied"
    assert server.aws("s3", "mb", "s3://other", creds=writer, check=False).stderr.count("AccessDenied") == 1
    with pytest.raises(s3.exceptions.ClientError) as e:
        server.client("s3", creds=writer).delete_objects(Bucket="team", Delete={"Objects": [{"Key": "secret.txt"}]})
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # Copying needs read access to the source.
    with pytest.raises(s3.exceptions.ClientError) as e:
        server.client("s3", creds=writer).copy_object(Bucket="team", Key="copy.txt",
                                                       CopySource={"Bucket": "team", "Key": "secret.txt"})
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.get_object(Bucket="team", Key="secret.txt")["Body"].read() == b"top secret"
    from conftest import Creds

    bad = Creds(server.root.key, "x" * 40)
    assert server.aws("s3", "ls", creds=bad, check=False).stderr.count("SignatureDoesNotMatch") == 1
    unknown = Creds("AKIAUNKNOWNUNKNOWN00", "x" * 40)
    assert "InvalidAccessKeyId" in server.aws("s3", "ls", creds=unknown, check=False).stderr


def test_encryption_at_rest_and_rotation(server, workdir):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="vault")
    plain = b"PLAINTEXT-MARKER-" * 5000
    s3.put_object(Bucket="vault", Key="a.txt", Body=plain, ServerSideEncryption="AES256")
    mpu = s3.create_multipart_upload(Bucket="vault", Key="parts.bin")
    etags = [s3.upload_part(Bucket="vault", Key="parts.bin", UploadId=mpu["UploadId"], PartNumber=n,
                            Body=(b"PART-MARKER-%d-" % n) * (MB // 12 * 6 if n == 1 else 100))["ETag"] for n in (1, 2)]
    s3.complete_multipart_upload(Bucket="vault", Key="parts.bin", UploadId=mpu["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]})
    server.aws("ssm", "put-parameter", "--name", "/vault/pw", "--type", "SecureString", "--value", "SECRET-PARAM-VALUE")
    on_disk = blob_bytes(server)
    assert len(on_disk) > len(plain)
    for marker in [b"PLAINTEXT-MARKER", b"PART-MARKER", b"SECRET-PARAM-VALUE"]:
        assert marker not in on_disk
        for f in ["slipway.db", "slipway.db-wal"]:
            p = server.data_dir / f
            assert marker not in (p.read_bytes() if p.exists() else b""), (f, marker)
    head = s3.head_object(Bucket="vault", Key="a.txt")
    assert head["ServerSideEncryption"] == "AES256"
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="vault", Key="kms.txt", Body=b"x", ServerSideEncryption="aws:kms")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"

    out = server.admin("rotate-master-key")
    assert out["ObjectDataKeysRewrapped"] == 3
    assert blob_bytes(server) == on_disk  # data keys re-wrapped, objects not rewritten
    assert s3.get_object(Bucket="vault", Key="a.txt")["Body"].read() == plain
    assert s3.get_object(Bucket="vault", Key="parts.bin")["ContentLength"] == MB // 12 * 6 * 14 + 100 * 14
    server.stop()
    from conftest import Server

    again = Server(server.data_dir, port=server.port).start()
    try:
        assert again.client("s3").get_object(Bucket="vault", Key="a.txt")["Body"].read() == plain
        assert again.aws("ssm", "get-parameter", "--name", "/vault/pw", "--with-decryption")["Parameter"]["Value"] == "SECRET-PARAM-VALUE"
        # A blob altered on disk is refused, not served.
        blob = max((p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 1
        blob.write_bytes(bytes(data))
        with pytest.raises(Exception):
            again.client("s3").get_object(Bucket="vault", Key="parts.bin")["Body"].read()
    finally:
        again.stop()


def test_kill_during_upload_leaves_nothing_partial(workdir):
    from conftest import Server

    server = Server(workdir / "data").start()
    s3 = server.client("s3")
    s3.create_bucket(Bucket="crash")
    big = write_random(workdir / "big.bin", 200 * MB, seed=2)

    def kill_mid_upload(cmd):
        p = subprocess.Popen(cmd, env=server.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            stored = sum(f.stat().st_size for f in (server.data_dir / "blobs").rglob("*") if f.is_file())
            if stored > 40 * MB:
                break
            time.sleep(0.02)
        server.kill9()
        p.wait(timeout=60)

    # A single 200 MB PUT (presigned, streamed by curl) and a multipart upload (aws s3 cp).
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "crash", "Key": "single.bin"}, ExpiresIn=600)
    kill_mid_upload(["curl", "-sS", "-X", "PUT", "-T", str(big), url])
    server = Server(workdir / "data", port=server.port).start()
    kill_mid_upload(["aws", "s3", "cp", str(big), "s3://crash/multi.bin"])
    server = Server(workdir / "data", port=server.port).start()
    s3 = server.client("s3")
    for key in ["single.bin", "multi.bin"]:
        try:
            head = s3.head_object(Bucket="crash", Key=key)
            assert head["ContentLength"] == 200 * MB  # complete if present at all
        except s3.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "404"
    # The store still works, and a complete upload reads back whole.
    server.aws("s3", "cp", str(big), "s3://crash/multi.bin")
    back = workdir / "back.bin"
    server.aws("s3", "cp", "s3://crash/multi.bin", str(back))
    assert digest(back) == digest(big)
    assert server.stop() == 0


def test_bad_input(server, workdir):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="strict")
    s3.put_object(Bucket="strict", Key="keep.txt", Body=b"keep")

    status, body, _ = raw(server, "POST", "/strict?delete", body=b"<Delete><Object><Key>keep.txt</Key></Object",
                          headers={"Content-MD5": "x"})
    assert status == 400 and error_code(body) in ("MalformedXML", "InvalidDigest")
    import base64

    md5 = base64.b64encode(hashlib.md5(b"<Delete><Object><Key>keep.txt</Key></Object").digest()).decode()
    status, body, _ = raw(server, "POST", "/strict?delete", body=b"<Delete><Object><Key>keep.txt</Key></Object",
                          headers={"Content-MD5": md5})
    assert (status, error_code(body)) == (400, "MalformedXML")

    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="strict", Key="bad.txt", Body=b"content", ContentMD5=wrong_md5)
    assert e.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="strict", Key="bad.txt", Body=b"content", ContentMD5="not base64!")
    assert e.value.response["Error"]["Code"] == "InvalidDigest"
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="strict", Key="bad.txt", Body=b"content", ChecksumCRC32="AAAAAA==")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    # A body that does not match its signed SHA-256.
    req = botocore.awsrequest.AWSRequest(method="PUT", url=server.url + "/strict/bad.txt", data=b"original")
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(server.root.key, server.root.secret), "s3", "us-east-1").add_auth(req)
    r = urllib.request.Request(server.url + "/strict/bad.txt", data=b"tampered", headers=dict(req.headers), method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r, timeout=30)
    assert e.value.code in (400, 403)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="strict", Key="bad.txt")

    # Keys are names, never paths: "../" stays inside the key space.
    s3.put_object(Bucket="strict", Key="../../../../etc/slipway-escape", Body=b"inside")
    assert s3.get_object(Bucket="strict", Key="../../../../etc/slipway-escape")["Body"].read() == b"inside"
    assert not pathlib.Path("/etc/slipway-escape").exists()
    assert not any("escape" in str(p) for p in server.data_dir.rglob("*"))
    for key in ["../slipway.db", "../../data/slipway.db", "../master.key"]:
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket="strict", Key=key)

    # Oversize metadata and headers.
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="strict", Key="meta.txt", Body=b"x", Metadata={"big": "v" * 3000})
    assert e.value.response["Error"]["Code"] == "MetadataTooLarge"
    status, _, _ = raw(server, "GET", "/strict/keep.txt", headers={"X-Filler": "f" * (512 * 1024)})
    assert status in (400, 431)

    # Names and tags.
    for name in ["UPPER", "a", "x" * 64, "bad_name", "-dash", "v1"]:
        with pytest.raises(s3.exceptions.ClientError) as e:
            s3.create_bucket(Bucket=name)
        assert e.value.response["Error"]["Code"] == "InvalidBucketName", name
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="strict", Key="t.txt", Body=b"x", Tagging="&".join(f"k{i}=v" for i in range(11)))
    assert e.value.response["Error"]["Code"] == "BadRequest"
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.list_objects_v2(Bucket="missing")
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="missing", Key="k", Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"

    # Nothing was written by any of it.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="strict")["Contents"]]
    assert keys == ["../../../../etc/slipway-escape", "keep.txt"]
    assert s3.get_object(Bucket="strict", Key="keep.txt")["Body"].read() == b"keep"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["strict"]


def test_listing_multipart_copy_tags_and_events(server):
    s3 = server.client("s3")
    s3.create_bucket(Bucket="listing")
    keys = [f"logs/2026/{d:02d}/app.log" for d in range(1, 6)] + ["logs/top.log", "readme", "z/ä b+c"]
    for k in keys:
        s3.put_object(Bucket="listing", Key=k, Body=k.encode(), Metadata={"origin": "test"}, ContentType="text/plain",
                      Tagging="team=build&stage=test")
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="listing", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 4 and [o["Key"] for p in pages for o in p["Contents"]] == sorted(keys)
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["logs/", "z/"]
    assert [o["Key"] for o in top["Contents"]] == ["readme"]
    nested = list(s3.get_paginator("list_objects_v2").paginate(Bucket="listing", Prefix="logs/", Delimiter="/",
                                                               PaginationConfig={"PageSize": 1}))
    assert [p["Prefix"] for pg in nested for p in pg.get("CommonPrefixes", [])] == ["logs/2026/"]
    assert [o["Key"] for pg in nested for o in pg.get("Contents", [])] == ["logs/top.log"]
    v1 = s3.list_objects(Bucket="listing", Prefix="logs/2026/", MaxKeys=2)
    assert v1["IsTruncated"] and len(v1["Contents"]) == 2
    assert s3.list_objects_v2(Bucket="listing", StartAfter="logs/top.log")["Contents"][0]["Key"] == "readme"

    head = s3.head_object(Bucket="listing", Key="z/ä b+c")
    assert head["Metadata"] == {"origin": "test"} and head["ContentType"] == "text/plain"
    tags = s3.get_object_tagging(Bucket="listing", Key="readme")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("stage", "test"), ("team", "build")]
    s3.put_object_tagging(Bucket="listing", Key="readme", Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    assert s3.get_object_tagging(Bucket="listing", Key="readme")["TagSet"] == [{"Key": "only", "Value": "one"}]
    s3.delete_object_tagging(Bucket="listing", Key="readme")
    assert s3.get_object_tagging(Bucket="listing", Key="readme")["TagSet"] == []

    # Copy keeps metadata unless replaced; copying onto itself without a change is refused.
    s3.copy_object(Bucket="listing", Key="copy", CopySource={"Bucket": "listing", "Key": "readme"})
    copied = s3.get_object(Bucket="listing", Key="copy")
    assert copied["Body"].read() == b"readme" and copied["Metadata"] == {"origin": "test"}
    s3.copy_object(Bucket="listing", Key="copy", CopySource="listing/copy", MetadataDirective="REPLACE",
                   Metadata={"new": "1"}, ContentType="application/json")
    replaced = s3.head_object(Bucket="listing", Key="copy")
    assert replaced["Metadata"] == {"new": "1"} and replaced["ContentType"] == "application/json"
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.copy_object(Bucket="listing", Key="copy", CopySource="listing/copy")
    assert e.value.response["Error"]["Code"] == "InvalidRequest"

    # Conditional requests.
    etag = s3.head_object(Bucket="listing", Key="readme")["ETag"]
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.get_object(Bucket="listing", Key="readme", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.get_object(Bucket="listing", Key="readme", IfMatch='"0000"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.put_object(Bucket="listing", Key="readme", Body=b"x", IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"

    # Multipart errors.
    up = s3.create_multipart_upload(Bucket="listing", Key="mpu")["UploadId"]
    e1 = s3.upload_part(Bucket="listing", Key="mpu", UploadId=up, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = s3.upload_part(Bucket="listing", Key="mpu", UploadId=up, PartNumber=2, Body=b"b" * 100)["ETag"]
    parts = s3.list_parts(Bucket="listing", Key="mpu", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 100, e1), (2, 100, e2)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="listing")["Uploads"]] == [up]
    for parts, code in [
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], "EntityTooSmall"),
        ([{"PartNumber": 1, "ETag": e2}], "InvalidPart"),
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
    ]:
        with pytest.raises(s3.exceptions.ClientError) as e:
            s3.complete_multipart_upload(Bucket="listing", Key="mpu", UploadId=up, MultipartUpload={"Parts": parts})
        assert e.value.response["Error"]["Code"] == code
    done = s3.complete_multipart_upload(Bucket="listing", Key="mpu", UploadId=up,
                                        MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}]})
    assert done["ETag"].endswith('-1"')
    assert s3.get_object(Bucket="listing", Key="mpu")["Body"].read() == b"b" * 100
    with pytest.raises(s3.exceptions.NoSuchUpload):
        s3.abort_multipart_upload(Bucket="listing", Key="mpu", UploadId=up)
    with pytest.raises(s3.exceptions.NoSuchUpload):
        s3.upload_part(Bucket="listing", Key="mpu", UploadId="nope", PartNumber=1, Body=b"x")

    # Events in EventBridge's aws.s3 shapes.
    s3.delete_object(Bucket="listing", Key="readme")
    events = [e for e in server.events() if e["source"] == "aws.s3"]
    created = [e for e in events if e["detail-type"] == "Object Created"]
    assert len(created) == len(keys) + 3
    assert created[0]["resources"] == ["arn:aws:s3:::listing"]
    assert created[0]["detail"]["object"]["key"] == keys[0]
    assert created[0]["detail"]["object"]["size"] == len(keys[0])
    deleted = [e for e in events if e["detail-type"] == "Object Deleted"]
    assert [(d["detail"]["object"]["key"], d["detail"]["deletion-type"]) for d in deleted] == [("readme", "Permanently Deleted")]


def test_routes_do_not_collide(server):
    """Git and Slipway's own routes keep working beside the S3 API."""
    server.aws("codecommit", "create-repository", "--repository-name", "repo")
    with urllib.request.urlopen(server.url + "/-/health", timeout=5) as r:
        assert r.status == 200
    status, body, _ = raw(server, "GET", "/")
    assert status == 200 and b"ListAllMyBucketsResult" in body
    status, _, _ = raw(server, "GET", "/v1/repos/repo/info/refs?service=git-upload-pack", sign=False)
    assert status == 401  # git's auth challenge, not an S3 error


def test_blobs_on_an_s3_compatible_store(server, workdir):
    """SLIPWAY_BLOB_URL=s3://bucket/prefix: a second Slipway keeps its object bytes in the
    first one's S3 API (any S3-compatible store works the same way)."""
    from conftest import Server

    server.aws("s3", "mb", "s3://backend")
    keeper = server.user("blob-keeper", {"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::backend", "arn:aws:s3:::backend/*"]}]})
    front = Server(workdir / "front", env={
        "SLIPWAY_BLOB_URL": "s3://backend/front-blobs",
        "SLIPWAY_BLOB_ENDPOINT": server.url,
        "SLIPWAY_BLOB_ACCESS_KEY_ID": keeper.key,
        "SLIPWAY_BLOB_SECRET_ACCESS_KEY": keeper.secret,
        "SLIPWAY_BLOB_REGION": "us-east-1",
    }).start()
    try:
        front.aws("s3", "mb", "s3://artifacts")
        big = write_random(workdir / "mid.bin", 20 * MB, seed=3)
        front.aws("s3", "cp", str(big), "s3://artifacts/mid.bin")
        front.client("s3").put_object(Bucket="artifacts", Key="small.txt", Body=b"FRONT-PLAINTEXT " * 100)
        back = workdir / "back.bin"
        front.aws("s3", "cp", "s3://artifacts/mid.bin", str(back))
        assert digest(back) == digest(big)
        part = front.client("s3").get_object(Bucket="artifacts", Key="mid.bin", Range="bytes=9000000-9000099")
        with open(big, "rb") as f:
            f.seek(9000000)
            assert part["Body"].read() == f.read(100)
        # The bytes live, sealed, in the backend bucket under the prefix; none on local disk.
        stored = server.client("s3").list_objects_v2(Bucket="backend")["Contents"]
        assert stored and all(o["Key"].startswith("front-blobs/s3/") for o in stored)
        assert sum(o["Size"] for o in stored) > 20 * MB
        for o in stored:
            body = server.client("s3").get_object(Bucket="backend", Key=o["Key"])["Body"].read()
            assert b"FRONT-PLAINTEXT" not in body
        assert not (workdir / "front" / "blobs").exists()
        front.aws("s3", "rm", "--recursive", "s3://artifacts")
        assert server.client("s3").list_objects_v2(Bucket="backend")["KeyCount"] == 0
    finally:
        front.stop()


def _hmac(key, msg):
    import hmac
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def aws_chunked_put(server, bucket, key, chunks, tamper=None):
    """PUT `chunks` with SigV4 streaming signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
    signed by hand as the SDKs do; `tamper` = index of a chunk whose signature is broken.
    Returns (status, body)."""
    import http.client
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    region, creds = "us-east-1", server.root
    scope = f"{day}/{region}/s3/aws4_request"
    host = server.url.split("://", 1)[1]
    decoded = sum(len(c) for c in chunks)
    headers = {
        "content-encoding": "aws-chunked",
        "host": host,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(decoded),
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        "PUT", f"/{bucket}/{key}", "",
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    ])
    k = _hmac(_hmac(_hmac(_hmac(("AWS4" + creds.secret).encode(), day), region), "s3"), "aws4_request")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    import hmac
    seed = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    body, prev = b"", seed
    empty = hashlib.sha256(b"").hexdigest()
    for i, chunk in enumerate(list(chunks) + [b""]):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, empty, hashlib.sha256(chunk).hexdigest()])
        sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        if tamper == i:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(chunk):x};chunk-signature={sig}\r\n".encode() + chunk + b"\r\n"
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.key}/{scope}, SignedHeaders={signed}, Signature={seed}")
    headers["content-length"] = str(len(body))
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("PUT", f"/{bucket}/{key}", body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_hand_signed_aws_chunked_upload(server, workdir):
    server.aws("s3", "mb", "s3://chunked")
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), b"the end"]
    status, body = aws_chunked_put(server, "chunked", "obj", chunks)
    assert status == 200, body
    got = workdir / "got"
    server.aws("s3", "cp", "s3://chunked/obj", str(got))
    assert got.read_bytes() == b"".join(chunks)

    # A chunk whose signature does not chain is refused, and nothing is stored.
    for bad in (0, 2, 3):
        status, body = aws_chunked_put(server, "chunked", f"bad{bad}", chunks, tamper=bad)
        assert status == 403 and b"SignatureDoesNotMatch" in body, (bad, status, body)
    listed = server.aws("s3api", "list-objects-v2", "--bucket", "chunked")["Contents"]
    assert [o["Key"] for o in listed] == ["obj"]
