# Thumbnails for uploads, as AWS's tutorial "Using an Amazon S3 trigger to create thumbnail
# images" writes it in Python (boto3 and Pillow), for the scenario of examples/thumbnail: for
# each S3 record, download the object to /tmp, shrink it to THUMBNAIL_WIDTH pixels wide (200 by
# default; aspect kept, never enlarged) and upload it under the same key to
# `<bucket>-thumbnails`, or to DEST_BUCKET when set.
#
# Environment:
#   THUMBNAIL_WIDTH   width in pixels (default 200)
#   DEST_BUCKET       where thumbnails go (default: the source bucket's name + "-thumbnails");
#                     never the bucket that triggered the invocation
#   S3_ENDPOINT       an S3-compatible endpoint such as http://127.0.0.1:9000 (path-style
#                     addressing is used then); unset means AWS S3
#   AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or anything else boto3's default
#                     credential chain reads
import os
import uuid
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config
from PIL import Image

endpoint = os.environ.get("S3_ENDPOINT") or None
s3_client = boto3.client(
    "s3",
    endpoint_url=endpoint,
    config=Config(s3={"addressing_style": "path"}) if endpoint else None,
)


def resize_image(image_path, resized_path, width):
    with Image.open(image_path) as image:
        image_format = image.format
        # thumbnail() keeps the aspect ratio and never enlarges; bounded by the width alone
        # (the height as it is), so that the width is exactly `width`, not one pixel less.
        image.thumbnail((width, image.height))
        image.save(resized_path, format=image_format)


def lambda_handler(event, context):
    width = int(os.environ.get("THUMBNAIL_WIDTH") or 200)
    written = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        dest = os.environ.get("DEST_BUCKET") or "{}-thumbnails".format(bucket)
        if dest == bucket:
            raise ValueError(
                "refusing to write thumbnails into {}, the bucket whose uploads invoke this "
                "function: set DEST_BUCKET to another bucket".format(bucket)
            )
        tmpkey = key.replace("/", "")
        download_path = "/tmp/{}{}".format(uuid.uuid4(), tmpkey)
        upload_path = "/tmp/resized-{}{}".format(uuid.uuid4(), tmpkey)
        try:
            s3_client.download_file(bucket, key, download_path)
            resize_image(download_path, upload_path, width)
            with Image.open(upload_path) as thumb:
                size = thumb.size
                content_type = Image.MIME.get(thumb.format, "application/octet-stream")
            s3_client.upload_file(
                upload_path, dest, key, ExtraArgs={"ContentType": content_type}
            )
        finally:
            for path in (download_path, upload_path):
                if os.path.exists(path):
                    os.remove(path)
        print("thumbnail {}/{} -> {}/{} {}x{}".format(bucket, key, dest, key, *size))
        written.append({"bucket": dest, "key": key, "width": size[0], "height": size[1]})
    return {"written": written}
