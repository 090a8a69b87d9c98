// The one line (and the exit code) of a command that failed with something other than a
// KlioError: no stack trace ever reaches the operator. An error of the operating system
// (a file it could not write, a host it could not reach) is said plainly, exit 1; anything
// else is a bug in klio, exit 70, with the stack only when KLIO_DEBUG=1.

interface SystemError {
  code: string;
  syscall?: string;
  path?: string;
  dest?: string;
  address?: string;
  port?: number;
  message?: string;
}

/** What the system call was doing, as "cannot … PATH". */
const VERBS: Record<string, string> = {
  open: "open", read: "read", write: "write", mkdir: "create the directory", rmdir: "remove the directory", unlink: "remove",
  rename: "rename", symlink: "create the symbolic link", link: "link", chmod: "change the mode of", fchmod: "change the mode of",
  chown: "change the owner of", copyfile: "copy", scandir: "list", opendir: "list", stat: "read", lstat: "read", fstat: "read",
  access: "use", readlink: "read the link", utime: "set the time of", futime: "set the time of", fsync: "flush", fdatasync: "flush",
  ftruncate: "truncate", truncate: "truncate", realpath: "resolve", rm: "remove", cp: "copy", mkdtemp: "create a directory in",
  connect: "connect to", getaddrinfo: "resolve the host", listen: "listen on", bind: "listen on",
};

const REASONS: Record<string, string> = {
  EACCES: "permission denied", EPERM: "operation not permitted", EROFS: "read-only file system", ENOENT: "no such file or directory",
  ENOTDIR: "a part of the path is not a directory", EISDIR: "it is a directory", ELOOP: "too many levels of symbolic links",
  ENOSPC: "no space left on device", EDQUOT: "disk quota exceeded", EIO: "input/output error (the disk or its file system is failing)",
  EEXIST: "it already exists", ENOTEMPTY: "the directory is not empty", EMFILE: "too many open files", ENFILE: "too many open files in the system",
  ENAMETOOLONG: "the name is too long", EXDEV: "not on the same file system", EBUSY: "busy", ETXTBSY: "busy",
  ECONNREFUSED: "connection refused", ECONNRESET: "connection reset", ETIMEDOUT: "timed out", EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable", ENOTFOUND: "no such host", EAI_AGAIN: "the name server did not answer", EPIPE: "the other end closed the connection",
  EADDRINUSE: "address already in use", EADDRNOTAVAIL: "address not available",
};

function systemErrorOf(e: unknown): SystemError | null {
  for (let x = e, depth = 0; x && typeof x === "object" && depth < 3; x = (x as { cause?: unknown }).cause, depth++) {
    const code = (x as { code?: unknown }).code;
    if (typeof code === "string" && /^E[A-Z0-9_]+$/.test(code)) return x as SystemError;
  }
  return null;
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ").trim();

export function failureLine(e: unknown, debug: boolean): { text: string; exitCode: number } {
  const sys = systemErrorOf(e);
  if (sys) {
    const reason = REASONS[sys.code] ?? oneLine(sys.message ?? sys.code);
    const verb = VERBS[sys.syscall ?? ""] ?? (sys.syscall ? `${sys.syscall}` : "use");
    const what = sys.path !== undefined ? `${sys.path}${sys.dest !== undefined ? ` to ${sys.dest}` : ""}` : sys.address !== undefined ? `${sys.address}${sys.port !== undefined ? `:${sys.port}` : ""}` : "";
    const line = what ? `cannot ${verb} ${what}: ${reason}` : `${oneLine(sys.message ?? "")} (${reason})`;
    return { text: `klio: ${line}\n${debug ? stackOf(e) : ""}`, exitCode: 1 };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { text: `klio: internal error: ${oneLine(message)}${debug ? `\n${stackOf(e)}` : " (set KLIO_DEBUG=1 for the stack)\n"}`, exitCode: 70 };
}

function stackOf(e: unknown): string {
  return e instanceof Error && e.stack ? e.stack + "\n" : "";
}
