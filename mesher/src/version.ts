export const mesherVersion = "0.1.0";
