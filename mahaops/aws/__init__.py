"""AWS provisioning with boto3: one typed description in, a converged environment out.

Each resource is a small *ensure* step (``network``, ``security``, ``iam``,
``ec2``, ``elb``, ``s3``, ``cloudfront``): find it by its tags or name, compare
it with the description, then create, update or leave it, recording the
outcome into a :class:`mahaops.aws.plan.Plan`. A dry run takes the same path
with every mutating call refused. ``teardown`` removes only what carries the
environment's tags. Clients come from a plain ``boto3.Session``, so profiles,
``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (a local moto server) work as usual.
"""
