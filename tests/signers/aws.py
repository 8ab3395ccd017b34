"""Sets up AWS KMS, IAM and STS in a moto server for the tests.

python aws.py ENDPOINT COMMAND [ARGS...] prints one JSON object. The server
checks SigV4 signatures and IAM policies after its first three requests,
which `admin` spends creating the administrator whose credentials (in the
environment) every other command uses.
"""
import json
import sys

import boto3

REGION = "us-east-1"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def allow(actions):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions.split(","), "Resource": "*"}]})


def main(endpoint, command, *args):
    client = lambda service: boto3.client(service, endpoint_url=endpoint, region_name=REGION)
    if command == "admin":
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    if command == "key":
        spec, alias = args
        kms = client("kms")
        arn = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName=alias, TargetKeyId=arn)
        return {"arn": arn}
    if command == "user":
        name, actions = args
        iam = client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=allow(actions))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    if command == "grant":
        name, actions = args
        client("iam").put_user_policy(UserName=name, PolicyName="p", PolicyDocument=allow(actions))
        return {}
    if command == "role":
        name, actions = args
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
            "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/cluster"}}]}
        iam = client("iam")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=allow(actions))
        return {"arn": arn}
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
