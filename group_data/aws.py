"""AWS environments: what ``invoke provision --env NAME`` builds (checked by AwsSettings).

Each environment names its region and zones, how many instances of each role
run and of which type, the domain and certificates, who may SSH in, and how
pyinfra reaches the hosts. Unlisted roles take the defaults of
``mahaops/settings/aws.py``; ``protected`` environments refuse ``invoke teardown``.
"""

aws_environments = {
    # A small, disposable copy of production: plain HTTP on the ALB's own name.
    "staging": {
        "region": "eu-west-1",  # every resource of the environment lives here
        "availability_zones": ["eu-west-1a", "eu-west-1b"],  # subnets and instances spread over two
        "vpc_cidr": "10.20.0.0/16",  # split into two public and two private /20 subnets
        "admin_cidrs": ["203.0.113.0/24"],  # the office: only source allowed to SSH
        "ssh_public_key": "~/.ssh/id_ed25519.pub",  # imported as EC2 key pair "maha-staging"
        "ssh_private_key": "~/.ssh/id_ed25519",  # used by pyinfra through inventories/aws.py
        "access": "public",  # hosts get public addresses; pyinfra connects to them directly
        "roles": {
            "app": {"count": 1, "instance_type": "t3.small"},
            "db": {"count": 1, "instance_type": "t3.medium", "disk_gb": 30},
            "cache": {"count": 1, "instance_type": "t3.micro"},
            "log": {"count": 1, "instance_type": "t3.small"},
            "worker": {"count": 1, "instance_type": "t3.small"},
        },
    },
    # The AWS stand-in on this machine (docs/sim.md): moto on 127.0.0.1 started on first
    # use, each instance a Docker host from the local platform's image. `invoke sim.up`
    # makes the key pair below when it is missing.
    "sim": {
        "region": "eu-west-1",
        "availability_zones": ["eu-west-1a", "eu-west-1b"],
        "profile": "maha-sim",  # the stand-in's endpoint and dummy credentials, never AWS
        "vpc_cidr": "10.213.0.0/16",  # checked against this machine's networks at start
        "nat_gateway": False,  # every host is public; apt goes through the package cache
        "admin_cidrs": ["54.214.0.0/16"],  # SSH arrives from this machine's public-side address
        "ssh_public_key": "~/.ssh/maha-sim.pub",
        "ssh_private_key": "~/.ssh/maha-sim",
        "access": "public",  # hosts reached at their public addresses, as on AWS
        # Hosts here reach Debian's mirror only (through the package cache): Debian's
        # Node.js, and the central rsyslog instead of Graylog's vendor repositories. The
        # stand-in has no CloudFront to serve /static/ (the app servers do) or downloads.
        "settings": {
            "nodejs_major": 18,
            "log_backend": "rsyslog",
            "app_asset_base_url": "",
            "app_uploads_cdn_url": "",
        },
        "roles": {
            "app": {"count": 1, "instance_type": "t3.small"},
            "db": {"count": 1, "instance_type": "t3.small"},
            "cache": {"count": 1, "instance_type": "t3.micro"},
            "log": {"count": 1, "instance_type": "t3.small"},
            "worker": {"count": 1, "instance_type": "t3.small"},
        },
    },
    # Production: HTTPS on its domain, hosts only on private subnets, reached over SSM.
    "production": {
        "region": "eu-west-1",
        "availability_zones": ["eu-west-1a", "eu-west-1b"],
        "vpc_cidr": "10.30.0.0/16",
        "protected": True,  # `invoke teardown --env production` refuses
        "admin_cidrs": [],  # no SSH from the internet at all
        "ssh_public_key": "~/.ssh/maha-production.pub",
        "ssh_private_key": "~/.ssh/maha-production",
        "access": "ssm",  # SSH tunnelled through AWS Systems Manager; no public addresses
        # Debian's images have no SSM agent: provision refuses "ssm" until these pin the
        # regional package it installs from UserData (version, and its SHA-256 to check):
        # "ssm_agent_version": "3.x.y.z", "ssm_agent_sha256": "<64 hex digits>",
        "domain": "maha.example.org",  # ALB: HTTP redirects to HTTPS with this certificate
        # With the domain's public Route 53 zone, provision writes its alias to the ALB
        # (and ACM's validation records for a requested certificate) there:
        # "hosted_zone_id": "Z0123456789ABCDEFGHIJ",
        "certificate_arn": (
            "arn:aws:acm:eu-west-1:111122223333:certificate/00000000-0000-0000-0000-000000000000"
        ),
        "roles": {
            "app": {"count": 2, "instance_type": "t3.medium"},  # one per zone behind the ALB
            "db": {"count": 1, "instance_type": "m6i.large", "disk_gb": 200},
            "cache": {"count": 1, "instance_type": "t3.medium"},
            "log": {"count": 1, "instance_type": "t3.medium", "disk_gb": 200},
            "worker": {"count": 2, "instance_type": "t3.medium"},
        },
    },
}
