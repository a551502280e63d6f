"""`invoke status` on AWS: each app server's state in the load balancer's target group."""

from __future__ import annotations

from mahaops.aws.elb import app_target_health
from mahaops.fleet import status
from mahaops.hosts import HostSpec
from tests.aws.test_load_balancer import _app_ids


def test_status_shows_each_app_server_in_or_out_of_the_target_group(
    aws, provision_qa, write_group_data
) -> None:
    provision_qa()
    group_data = write_group_data()
    first, second = _app_ids(aws)
    elb = aws.client("elbv2")
    tg = elb.describe_target_groups(Names=["maha-qa-app"])["TargetGroups"][0]["TargetGroupArn"]
    elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": second}])

    health = app_target_health("qa", session=aws, group_data=group_data)
    hosts = [
        HostSpec(name, ("aws", "app_servers"), {"instance_id": instance})
        for name, instance in (("app-1", first), ("app-2", second))
    ]
    rows = [status.HostStatus(h.name, "app", "-") for h in hosts]
    status.apply_target_health(rows, hosts, health)
    assert [(r.name, r.lb) for r in rows] == [("app-1", "in service"), ("app-2", "")]
