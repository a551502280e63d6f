"""The AWS inventory puts instances in the local inventory's groups, reachable as configured."""

from __future__ import annotations

from pathlib import Path

from mahaops.aws.inventory import hosts, record_handover
from mahaops.roles import GROUPS, ROLE_BY_NAME
from mahaops.settings.aws import EC2_ROLES


def test_hosts_are_grouped_by_role_tag_like_the_local_inventory(
    aws, provision_qa, write_group_data
):
    provision_qa()
    found = hosts("qa", session=aws, group_data=write_group_data())
    groups = {h.name: h.groups for h in found}
    assert groups["maha-qa-app-1"] == ("aws", "app_servers")
    assert groups["maha-qa-db-1"] == ("aws", "db_servers")
    # every role EC2 runs (the ALB is AWS's own, the mail sink and storage are local only)
    assert {g for h in found for g in h.groups[1:]} == {ROLE_BY_NAME[r].group for r in EC2_ROLES}
    assert set(GROUPS) - {g for h in found for g in h.groups[1:]} == {
        "load_balancers",
        "mail_servers",
        "storage_servers",
    }


def test_public_access_connects_to_public_addresses_with_the_key(
    aws, provision_qa, write_group_data, ssh_public_key
):
    provision_qa()
    host = hosts("qa", session=aws, group_data=write_group_data())[0]
    assert host.data["ssh_hostname"] != host.data["private_address"]
    assert host.data["ssh_user"] == "admin"
    assert host.data["ssh_key"] == str(ssh_public_key.with_suffix(""))
    assert host.data["private_address"].startswith("10.20.")


SSM_AGENT = {"ssm_agent_version": "3.3.1142.0", "ssm_agent_sha256": "0" * 64}  # well-formed


def test_ssm_access_tunnels_ssh_through_session_manager(
    aws, provision_qa, write_group_data, monkeypatch
):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    ssm = {"access": "ssm", "admin_cidrs": [], **SSM_AGENT}
    provision_qa(**ssm)
    host = hosts("qa", session=aws, group_data=write_group_data(**ssm))[0]
    assert host.data["ssh_hostname"] == host.data["instance_id"]
    config = Path(host.data["ssh_config_file"]).read_text()
    assert (
        "ProxyCommand aws ssm start-session --target %h" in config
        and "--region eu-west-1" in config
    )


def test_bastion_access_jumps_to_private_addresses(aws, provision_qa, write_group_data):
    settings = {"access": "bastion", "bastion": "admin@bastion.example.org"}
    provision_qa(**settings)
    host = hosts("qa", session=aws, group_data=write_group_data(**settings))[0]
    assert host.data["ssh_hostname"] == host.data["private_address"]
    assert "ProxyJump admin@bastion.example.org" in Path(host.data["ssh_config_file"]).read_text()


def test_first_contact_is_the_images_user_until_the_host_is_handed_over(
    aws, provision_qa, write_group_data, ssh_public_key
):
    provision_qa()
    group_data = write_group_data()
    first = hosts("qa", session=aws, group_data=group_data)[0]
    assert first.data["ssh_user"] == "admin"
    # The base role authorizes the operator's key for the deploy user before sshd
    # refuses `admin`: the key comes from the environment's ssh_public_key.
    assert first.data["base_deploy_user_keys"] == [ssh_public_key.read_text().strip()]

    record_handover("qa", first.data["instance_id"], "maha", session=aws, group_data=group_data)

    again = {h.name: h for h in hosts("qa", session=aws, group_data=group_data)}
    assert again[first.name].data["ssh_user"] == "maha"
    others = [h for h in again.values() if h.name != first.name]
    assert others and all(h.data["ssh_user"] == "admin" for h in others)


def test_app_servers_trust_forwarded_client_addresses_only_from_the_alb_subnets(
    aws, provision_qa, write_group_data
):
    provision_qa()
    found = hosts("qa", session=aws, group_data=write_group_data())
    app = next(h for h in found if "app_servers" in h.groups)
    # the public subnets (10.20.0.0/20 and 10.20.16.0/20 of the default vpc_cidr) hold the ALB
    assert app.data["nginx_real_ip_from"] == ["10.20.0.0/20", "10.20.16.0/20"]
    assert all("nginx_real_ip_from" not in h.data for h in found if "app_servers" not in h.groups)


def test_an_environment_s_settings_reach_its_hosts_under_what_the_inventory_knows(
    aws, provision_qa, write_group_data
):
    settings = {"nodejs_major": 18, "log_backend": "rsyslog", "nginx_real_ip_from": ["1.2.3.0/24"]}
    provision_qa(settings=settings)
    found = hosts("qa", session=aws, group_data=write_group_data(settings=settings))
    for host in found:
        assert host.data["nodejs_major"] == 18 and host.data["log_backend"] == "rsyslog"
    app = next(h for h in found if "app_servers" in h.groups)
    assert app.data["nginx_real_ip_from"] != ["1.2.3.0/24"]  # the ALB's subnets: the inventory's


def test_app_servers_and_workers_presign_for_the_environment_s_uploads_bucket(
    aws, provision_qa, write_group_data
):
    provision_qa()
    found = hosts("qa", session=aws, group_data=write_group_data())
    releasing = [h for h in found if {"app_servers", "workers"} & set(h.groups)]
    assert releasing
    for h in releasing:
        assert h.data["storage_uploads_bucket"] == "maha-qa-uploads-123456789012"
        assert h.data["storage_region"] == "eu-west-1"
    assert all("storage_uploads_bucket" not in h.data for h in found if h not in releasing)
    # Downloads are CloudFront URLs signed with the environment's key (the /uploads/* path)...
    cf = aws.client("cloudfront", region_name="us-east-1")
    (summary,) = cf.list_distributions()["DistributionList"]["Items"]
    assert {h.data["app_uploads_cdn_url"] for h in releasing} == {
        f"https://{summary['DomainName']}"
    }
    # ...unless the environment says otherwise (the sim: no CloudFront serves anything there).
    own = hosts(
        "qa", session=aws, group_data=write_group_data(settings={"app_uploads_cdn_url": ""})
    )
    assert {h.data["app_uploads_cdn_url"] for h in own if "app_servers" in h.groups} == {""}
