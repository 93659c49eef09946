"""Create the accounts table as the template declares it (on demand, key
`account`, TTL on `expires`) in the local moto, unless it exists: the
emulator's functions never create it, as on Lambda."""

import os
import sys

import boto3

name = sys.argv[1]
dynamodb = boto3.client("dynamodb", endpoint_url=os.environ["MOTO_URL"])
if name not in dynamodb.list_tables()["TableNames"]:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "account", "KeyType": "HASH"}],
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"AttributeName": "expires", "Enabled": True}
    )
