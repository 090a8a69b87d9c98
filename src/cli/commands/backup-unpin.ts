import { pinCommand } from "./backup-pin.ts";

export const command = pinCommand(false);
