export interface Requirement {
  what: string;
  packages: string[];
  present: () => boolean;
}
export declare const testRequirements: Requirement[];
export declare const benchRequirements: Requirement[];
export declare function missingPackages(requirements: Requirement[]): string[];
