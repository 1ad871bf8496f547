"""Copy a directory tree to/from S3 with boto3's TransferManager at its default config.

    python tm_transfer.py upload   SRC_DIR BUCKET PREFIX
    python tm_transfer.py download BUCKET PREFIX DEST_DIR

All files are submitted to one TransferManager, whose thread pool (10 workers by default)
runs them concurrently; multipart above 8 MiB in 8 MiB parts (TransferConfig defaults).
The endpoint comes from AWS_ENDPOINT_URL. Runs under bench/.venv's python.
"""
import os
import sys
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager


def main(argv: list[str]) -> None:
    client = boto3.client("s3")
    with create_transfer_manager(client, TransferConfig()) as tm:
        if argv[0] == "upload":
            src, bucket, prefix = Path(argv[1]), argv[2], argv[3].strip("/")
            futures = [tm.upload(str(Path(d, n)), bucket,
                                 f"{prefix}/{Path(d, n).relative_to(src).as_posix()}")
                       for d, _, names in os.walk(src) for n in names]
        elif argv[0] == "download":
            bucket, prefix, dest = argv[1], argv[2].strip("/") + "/", Path(argv[3])
            futures = []
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    target = dest / obj["Key"][len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(tm.download(bucket, obj["Key"], str(target)))
        else:
            raise SystemExit(__doc__)
        for f in futures:
            f.result()
    print(f"{argv[0]}ed {len(futures)} files with {type(tm).__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
