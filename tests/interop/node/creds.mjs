// Prints the credentials the AWS SDK for JavaScript gets from keyfed's container or IMDSv2 face
// (argv[2]: "container" or "imds"), as one JSON line; the test compares them with keyfed's.
import { fromHttp, fromInstanceMetadata } from "@aws-sdk/credential-providers";

const face = process.argv[2];
const provider =
  face === "container"
    ? fromHttp({ timeout: 5000, maxRetries: 0 })
    : fromInstanceMetadata({ timeout: 5000, maxRetries: 0 });
const c = await provider();
console.log(
  JSON.stringify({
    AccessKeyId: c.accessKeyId,
    HasSecret: c.secretAccessKey.length > 0,
    HasToken: (c.sessionToken ?? "").length > 0,
    Expiration: c.expiration?.toISOString(),
  }),
);
