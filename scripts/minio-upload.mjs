// bench:offsite's reference: the plain minio client uploading a list of files, N at a time.
//   node scripts/minio-upload.mjs PORT PREFIX CONCURRENCY FILES.json   (FILES: [{key, file}])
import { readFileSync } from "node:fs";
import * as Minio from "minio";

const [port, prefix, concurrency, list] = process.argv.slice(2);
const files = JSON.parse(readFileSync(list, "utf8"));
const client = new Minio.Client({ endPoint: "127.0.0.1", port: Number(port), useSSL: false, accessKey: "S3RVER", secretKey: "S3RVER", pathStyle: true, region: "us-east-1" });
let next = 0;
await Promise.all(Array.from({ length: Number(concurrency) }, async () => {
  while (next < files.length) {
    const f = files[next++];
    await client.fPutObject("bench", `${prefix}/${f.key}`, f.file);
  }
}));
