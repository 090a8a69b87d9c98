// An S3 server for tests, in its own process so that a test can kill -9 it and start it
// again on the same directory: @20minutes/s3rver on 127.0.0.1, with the one call it lacks
// (ListMultipartUploads, which the minio client makes before a multipart upload) answered
// with an empty list. Prints {"port": N} on stdout once it listens.
//   node --openssl-legacy-provider s3rver-process.mjs DIR PORT BUCKET...
import S3rver from "@20minutes/s3rver";

const [dir, port, ...buckets] = process.argv.slice(2);
const server = new S3rver({ address: "127.0.0.1", port: Number(port), silent: true, directory: dir, configureBuckets: buckets.map((name) => ({ name })), resetOnClose: false });
server.middleware.unshift(async (ctx, next) => {
  if (ctx.method === "GET" && "uploads" in ctx.query && ctx.path.split("/").filter(Boolean).length === 1) {
    const bucket = ctx.path.split("/").filter(Boolean)[0];
    ctx.type = "application/xml";
    ctx.body = `<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${bucket}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><NextKeyMarker></NextKeyMarker><NextUploadIdMarker></NextUploadIdMarker><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>`;
    return;
  }
  await next();
});
const { port: bound } = await server.run();
process.stdout.write(JSON.stringify({ port: bound }) + "\n");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
