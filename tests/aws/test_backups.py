"""Backups leave the db host: a private, encrypted, versioned bucket whose lifecycle keeps
the retention, written by the db hosts' own role, which may put and list there and nothing
else (no read, no delete, no other bucket)."""

from __future__ import annotations

import json

from mahaops import PROJECT_ROOT
from mahaops.aws.inventory import hosts

ACCOUNT = "123456789012"  # moto's
BUCKET = f"maha-qa-backups-{ACCOUNT}"


def test_backup_bucket_is_private_encrypted_versioned_and_expires_old_dumps(aws, provision_qa):
    provision_qa(backup_retention_days=40)
    s3 = aws.client("s3")
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["Expiration"]["Days"] == 40
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    # TLS only, and no CloudFront (or anyone else) reading the dumps
    assert [st["Sid"] for st in policy["Statement"]] == ["DenyPlainHttp"]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert (tags["Environment"], tags["Role"]) == ("qa", "db")


def test_db_hosts_may_only_put_and_list_backups(aws, provision_qa):
    provision_qa()
    iam = aws.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName="maha-qa-db")["InstanceProfile"]
    (role,) = profile["Roles"]
    names = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    assert sorted(names) == ["backups", "no-secrets"]
    assert iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="backups")[
        "PolicyDocument"
    ]
    allowed = {
        (action, resource)
        for st in document["Statement"]
        if st["Effect"] == "Allow"
        for action in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        for resource in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
    }
    assert allowed == {
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/*"),
        ("s3:AbortMultipartUpload", f"arn:aws:s3:::{BUCKET}/*"),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
    }
    reservations = aws.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:Role", "Values": ["db"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (db,) = [i for r in reservations for i in r["Instances"]]
    assert db["IamInstanceProfile"]["Arn"].endswith("/maha-qa-db")


def test_the_db_role_is_told_where_to_upload_and_never_deletes_there(
    aws, provision_qa, write_group_data
):
    provision_qa()
    found = hosts("qa", session=aws, group_data=write_group_data())
    (db,) = [h for h in found if "db_servers" in h.groups]
    assert db.data["postgresql_backup_s3_bucket"] == BUCKET
    # The bucket's lifecycle expires dumps; the host never deletes there (its role may not:
    # a delete refused would fail the nightly backup).
    assert "postgresql_backup_s3_keep_days" not in db.data
    script = (PROJECT_ROOT / "templates/db/maha-pg-backup.py.j2").read_text()
    assert "delete_object" not in script and "delete_objects" not in script
    assert all("postgresql_backup_s3_bucket" not in h.data for h in found if h is not db)


def test_a_db_host_launched_without_the_role_gets_it(aws, provision_qa):
    # db hosts made before backups went to S3 had no instance profile.
    provision_qa()
    ec2 = aws.client("ec2")
    associations = ec2.describe_iam_instance_profile_associations()[
        "IamInstanceProfileAssociations"
    ]
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Role", "Values": ["db"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (db,) = [i for r in reservations for i in r["Instances"]]
    (mine,) = [a for a in associations if a["InstanceId"] == db["InstanceId"]]
    ec2.disassociate_iam_instance_profile(AssociationId=mine["AssociationId"])

    provision_qa()

    reservations = ec2.describe_instances(InstanceIds=[db["InstanceId"]])["Reservations"]
    assert reservations[0]["Instances"][0]["IamInstanceProfile"]["Arn"].endswith("/maha-qa-db")
