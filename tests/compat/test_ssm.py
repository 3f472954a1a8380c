"""Parameter Store through the real aws-cli and boto3: types, versions, hierarchy, encryption
at rest, IAM and events."""

import pytest


def test_secure_string_round_trip_and_at_rest(server):
    server.aws("ssm", "put-parameter", "--name", "/app/prod/db-password", "--type", "SecureString",
               "--value", "correct-horse-battery-staple", "--description", "db")
    p = server.aws("ssm", "get-parameter", "--name", "/app/prod/db-password", "--with-decryption")["Parameter"]
    assert p["Value"] == "correct-horse-battery-staple"
    assert p["Type"] == "SecureString" and p["Version"] == 1
    assert p["ARN"] == "arn:aws:ssm:us-east-1:000000000000:parameter/app/prod/db-password"
    hidden = server.aws("ssm", "get-parameter", "--name", "/app/prod/db-password")["Parameter"]["Value"]
    assert hidden != "correct-horse-battery-staple" and "battery" not in hidden
    for f in ["slipway.db", "slipway.db-wal"]:
        path = server.data_dir / f
        data = path.read_bytes() if path.exists() else b""
        assert b"correct-horse" not in data, f"{f} holds the plaintext"
    meta = server.aws("ssm", "describe-parameters")["Parameters"]
    assert [(m["Name"], m["KeyId"], m["Description"]) for m in meta] == [("/app/prod/db-password", "alias/aws/ssm", "db")]


def test_versions_types_and_errors(server):
    ssm = server.client("ssm")
    assert ssm.put_parameter(Name="region", Value="us-east-1", Type="String")["Version"] == 1
    with pytest.raises(ssm.exceptions.ParameterAlreadyExists):
        ssm.put_parameter(Name="region", Value="eu-west-1", Type="String")
    assert ssm.put_parameter(Name="region", Value="eu-west-1", Overwrite=True)["Version"] == 2
    with pytest.raises(ssm.exceptions.HierarchyTypeMismatchException):
        ssm.put_parameter(Name="region", Value="x", Type="SecureString", Overwrite=True)
    assert ssm.get_parameter(Name="region")["Parameter"]["Value"] == "eu-west-1"
    old = ssm.get_parameter(Name="region:1")["Parameter"]
    assert (old["Value"], old["Selector"], old["Version"]) == ("us-east-1", ":1", 1)
    with pytest.raises(ssm.exceptions.ParameterVersionNotFound):
        ssm.get_parameter(Name="region:9")
    history = ssm.get_parameter_history(Name="region")["Parameters"]
    assert [(h["Version"], h["Value"]) for h in history] == [(1, "us-east-1"), (2, "eu-west-1")]
    ssm.put_parameter(Name="hosts", Value="a,b,c", Type="StringList", Tags=[{"Key": "team", "Value": "ops:é/1"}])
    with pytest.raises(ssm.exceptions.ClientError) as e:
        ssm.put_parameter(Name="hosts", Value="d", Overwrite=True, Tags=[{"Key": "a", "Value": "b"}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert ssm.get_parameter(Name="hosts")["Parameter"]["Type"] == "StringList"
    got = ssm.get_parameters(Names=["region", "hosts", "missing"])
    assert sorted(p["Name"] for p in got["Parameters"]) == ["hosts", "region"]
    assert got["InvalidParameters"] == ["missing"]
    for name in ["aws-reserved", "/ssm/x", "a/b", "/a//b"]:
        with pytest.raises(ssm.exceptions.ClientError) as e:
            ssm.put_parameter(Name=name, Value="v", Type="String")
        assert e.value.response["Error"]["Code"] == "ValidationException", name
    with pytest.raises(ssm.exceptions.ClientError) as e:
        ssm.put_parameter(Name="/" + "/".join("l" * 1 for _ in range(16)), Value="v", Type="String")
    assert e.value.response["Error"]["Code"] == "HierarchyLevelLimitExceededException"
    with pytest.raises(ssm.exceptions.ParameterPatternMismatchException):
        ssm.put_parameter(Name="port", Value="http", Type="String", AllowedPattern=r"\d+")
    with pytest.raises(ssm.exceptions.ClientError) as e:
        ssm.put_parameter(Name="big", Value="x" * 4097, Type="String")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ssm.exceptions.ClientError) as e:
        ssm.put_parameter(Name="notype", Value="v")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    ssm.delete_parameter(Name="region")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="region")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.delete_parameter(Name="region")
    gone = ssm.delete_parameters(Names=["hosts", "never"])
    assert (gone["DeletedParameters"], gone["InvalidParameters"]) == (["hosts"], ["never"])


def test_hierarchy_paths_and_filters(server):
    ssm = server.client("ssm")
    for i in range(12):
        ssm.put_parameter(Name=f"/svc/a/p{i:02d}", Value=str(i), Type="String")
    ssm.put_parameter(Name="/svc/a/deep/x", Value="x", Type="SecureString")
    ssm.put_parameter(Name="/svc/b", Value="b", Type="String")
    names = []
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/svc/a"):
        assert len(page["Parameters"]) <= 10
        names += [p["Name"] for p in page["Parameters"]]
    assert names == [f"/svc/a/p{i:02d}" for i in range(12)]
    rec = [p["Name"] for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/svc", Recursive=True)
           for p in page["Parameters"]]
    assert len(rec) == 14 and "/svc/a/deep/x" in rec
    secure = ssm.get_parameters_by_path(Path="/svc", Recursive=True, WithDecryption=True,
                                        ParameterFilters=[{"Key": "Type", "Values": ["SecureString"]}])["Parameters"]
    assert [(p["Name"], p["Value"]) for p in secure] == [("/svc/a/deep/x", "x")]
    one = ssm.describe_parameters(ParameterFilters=[{"Key": "Path", "Option": "OneLevel", "Values": ["/svc"]}])
    assert [p["Name"] for p in one["Parameters"]] == ["/svc/b"]
    begins = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": ["/svc/a/p0"]}])
    assert len(begins["Parameters"]) == 10
    with pytest.raises(ssm.exceptions.InvalidFilterKey):
        ssm.describe_parameters(ParameterFilters=[{"Key": "Label", "Values": ["red"]}])
    with pytest.raises(ssm.exceptions.InvalidNextToken):
        ssm.describe_parameters(NextToken="bogus")


def test_iam_and_events(server):
    server.aws("ssm", "put-parameter", "--name", "/team/a/key", "--type", "SecureString", "--value", "k1")
    server.aws("ssm", "put-parameter", "--name", "/team/b/key", "--type", "String", "--value", "k2")
    nobody = server.user("nobody")
    assert server.aws("ssm", "get-parameter", "--name", "/team/a/key", creds=nobody, check=False).code == "AccessDeniedException"
    reader = server.user("reader", {"Statement": [{"Effect": "Allow", "Action": ["ssm:GetParameter*"],
                                                  "Resource": "arn:aws:ssm:*:*:parameter/team/a/*"}]})
    p = server.aws("ssm", "get-parameter", "--name", "/team/a/key", "--with-decryption", creds=reader)["Parameter"]
    assert p["Value"] == "k1"
    assert server.aws("ssm", "get-parameter", "--name", "/team/b/key", creds=reader, check=False).code == "AccessDeniedException"
    assert server.aws("ssm", "put-parameter", "--name", "/team/a/key", "--value", "x", "--overwrite", creds=reader,
                      check=False).code == "AccessDeniedException"
    server.aws("ssm", "put-parameter", "--name", "/team/b/key", "--value", "k3", "--overwrite")
    server.aws("ssm", "delete-parameter", "--name", "/team/b/key")
    events = [(e["detail"]["operation"], e["detail"]["name"]) for e in server.events() if e["source"] == "aws.ssm"]
    assert events == [("Create", "/team/a/key"), ("Create", "/team/b/key"), ("Update", "/team/b/key"), ("Delete", "/team/b/key")]
    assert all(e["detail-type"] == "Parameter Store Change" for e in server.events() if e["source"] == "aws.ssm")


def test_unbuilt_ssm_operations_answer_501(server):
    err = server.aws("ssm", "describe-instance-information", check=False)
    assert err.code == "NotImplementedException"


def test_rotate_master_key_while_serving(workdir):
    from conftest import Server

    server = Server(workdir / "data").start()
    server.aws("ssm", "put-parameter", "--name", "/rot/a", "--type", "SecureString", "--value", "before-rotation")
    user = server.user("rotator", {"Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}]})
    keyfile = server.data_dir / "master.key"
    keys = lambda: [l for l in keyfile.read_text().splitlines() if l and not l.startswith("#")]
    assert len(keys()) == 1

    out = server.admin("rotate-master-key")
    assert out == {"MasterKeyId": "00000002", "AccessKeysReencrypted": 1, "SecureStringVersionsRewrapped": 1,
                   "ObjectDataKeysRewrapped": 0, "BuildJobsRewrapped": 0,
                   "BuildLogKeysRewrapped": 0}
    assert len(keys()) == 2 and (keyfile.stat().st_mode & 0o777) == 0o600

    # The running server follows the new key file: old and new secrets read, keys authenticate.
    got = server.aws("ssm", "get-parameter", "--name", "/rot/a", "--with-decryption", creds=user)["Parameter"]
    assert got["Value"] == "before-rotation"
    server.aws("ssm", "put-parameter", "--name", "/rot/b", "--type", "SecureString", "--value", "after-rotation", creds=user)
    assert server.stop() == 0

    server = Server(workdir / "data", port=server.port).start()
    for name, value in [("/rot/a", "before-rotation"), ("/rot/b", "after-rotation")]:
        assert server.aws("ssm", "get-parameter", "--name", name, "--with-decryption", creds=user)["Parameter"]["Value"] == value
    for f in ["slipway.db", "slipway.db-wal"]:
        p = server.data_dir / f
        assert b"rotation" not in (p.read_bytes() if p.exists() else b"")
    assert server.stop() == 0
