// GENERATED from sdk/schema/policy.schema.json: do not edit. The schema file is the source of
// truth; regenerate with `REGMESH_REWRITE=1 npx vitest run --project unit sdk/test/core/policy-schema.test.ts`
// (then `npx biome format --write sdk/src/core/policy-schema.ts`). Embedded rather than read
// with node:fs so the pure core can use it and it survives the build; this test fails when
// this copy and the JSON file differ.

export const POLICY_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  $id: "urn:regmesh:schema:policy:1",
  title: "regmesh governance policy",
  description:
    "One policy per service, stored at <prefix>/policies/<service>. Bounds repeat sdk/src/core/limits.ts; a test checks that they agree. Semantic rules the schema cannot express (split weights sum > 0, referenced subsets exist, regexes compile, unique names) are checked by validatePolicy.",
  type: "object",
  required: ["schemaVersion", "service"],
  additionalProperties: false,
  properties: {
    schemaVersion: {
      const: 1,
      description: "Version of this policy format.",
    },
    service: {
      $ref: "#/$defs/serviceName",
    },
    description: {
      type: "string",
      maxLength: 1024,
    },
    subsets: {
      type: "array",
      maxItems: 32,
      items: {
        $ref: "#/$defs/subset",
      },
    },
    routes: {
      type: "array",
      maxItems: 64,
      description:
        "Evaluated in order; the first rule whose match holds wins. A rule without match matches every request.",
      items: {
        $ref: "#/$defs/route",
      },
    },
    loadBalancer: {
      $ref: "#/$defs/loadBalancer",
    },
    protectThreshold: {
      type: "number",
      minimum: 0,
      maximum: 1,
      description:
        "When the available share of the chosen instances falls below this, route across all of them (Envoy panic threshold, Nacos protect threshold).",
    },
    timeoutMs: {
      $ref: "#/$defs/timeoutMs",
    },
    retries: {
      $ref: "#/$defs/retries",
    },
    breaker: {
      $ref: "#/$defs/breaker",
    },
    outlierDetection: {
      $ref: "#/$defs/outlierDetection",
    },
    rateLimit: {
      $ref: "#/$defs/rateLimit",
    },
    allowedCallers: {
      type: "array",
      maxItems: 256,
      description: "When present, only these caller services may call; absent means everyone.",
      items: {
        $ref: "#/$defs/serviceName",
      },
    },
  },
  $defs: {
    serviceName: {
      type: "string",
      minLength: 1,
      maxLength: 128,
      pattern: "^[^/\\u0000-\\u001f\\u007f]+$",
    },
    name: {
      type: "string",
      minLength: 1,
      maxLength: 64,
      pattern: "^[A-Za-z0-9][A-Za-z0-9._-]*$",
    },
    shortString: {
      type: "string",
      maxLength: 1024,
    },
    timeoutMs: {
      type: "integer",
      minimum: 1,
      maximum: 600000,
    },
    subset: {
      type: "object",
      required: ["name"],
      additionalProperties: false,
      description:
        "Instances matching every given selector. A subset without selectors holds every instance.",
      properties: {
        name: {
          $ref: "#/$defs/name",
        },
        version: {
          $ref: "#/$defs/shortString",
        },
        zone: {
          $ref: "#/$defs/shortString",
        },
        tags: {
          type: "array",
          maxItems: 32,
          description: "An instance must carry all of these tags.",
          items: {
            $ref: "#/$defs/shortString",
          },
        },
      },
    },
    route: {
      type: "object",
      required: ["split"],
      additionalProperties: false,
      properties: {
        name: {
          $ref: "#/$defs/name",
        },
        match: {
          $ref: "#/$defs/match",
        },
        split: {
          type: "array",
          minItems: 1,
          maxItems: 8,
          items: {
            $ref: "#/$defs/splitEntry",
          },
        },
        timeoutMs: {
          $ref: "#/$defs/timeoutMs",
        },
      },
    },
    splitEntry: {
      type: "object",
      required: ["subset", "weight"],
      additionalProperties: false,
      properties: {
        subset: {
          $ref: "#/$defs/name",
        },
        weight: {
          type: "integer",
          minimum: 0,
          maximum: 10000,
        },
      },
    },
    match: {
      type: "object",
      additionalProperties: false,
      description: "Every given condition must hold.",
      properties: {
        headers: {
          type: "array",
          maxItems: 16,
          items: {
            $ref: "#/$defs/headerMatch",
          },
        },
        path: {
          $ref: "#/$defs/pathMatch",
        },
        methods: {
          type: "array",
          minItems: 1,
          maxItems: 16,
          items: {
            type: "string",
            pattern: "^[A-Z]{1,16}$",
          },
        },
        callers: {
          type: "array",
          minItems: 1,
          maxItems: 256,
          items: {
            $ref: "#/$defs/serviceName",
          },
        },
      },
    },
    headerMatch: {
      type: "object",
      required: ["name"],
      additionalProperties: false,
      description:
        "Header names compare case-insensitively. A regex must match the whole value (as Envoy's safe_regex).",
      properties: {
        name: {
          type: "string",
          minLength: 1,
          maxLength: 256,
          pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        },
        exact: {
          $ref: "#/$defs/shortString",
        },
        prefix: {
          $ref: "#/$defs/shortString",
        },
        regex: {
          type: "string",
          minLength: 1,
          maxLength: 256,
        },
        present: {
          type: "boolean",
        },
        invert: {
          type: "boolean",
        },
      },
      oneOf: [
        {
          required: ["exact"],
        },
        {
          required: ["prefix"],
        },
        {
          required: ["regex"],
        },
        {
          required: ["present"],
        },
      ],
    },
    pathMatch: {
      type: "object",
      additionalProperties: false,
      properties: {
        exact: {
          type: "string",
          minLength: 1,
          maxLength: 1024,
          pattern: "^/",
        },
        prefix: {
          type: "string",
          minLength: 1,
          maxLength: 1024,
          pattern: "^/",
        },
      },
      oneOf: [
        {
          required: ["exact"],
        },
        {
          required: ["prefix"],
        },
      ],
    },
    loadBalancer: {
      type: "object",
      required: ["kind"],
      additionalProperties: false,
      properties: {
        kind: {
          enum: ["round-robin", "weighted-round-robin", "random", "p2c-peak-ewma", "ring-hash", "maglev"],
        },
        hashKey: {
          type: "object",
          required: ["header"],
          additionalProperties: false,
          description: "Where ring-hash and maglev take the request key from.",
          properties: {
            header: {
              type: "string",
              minLength: 1,
              maxLength: 256,
              pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            },
          },
        },
        zoneAware: {
          type: "object",
          required: ["enabled"],
          additionalProperties: false,
          properties: {
            enabled: {
              type: "boolean",
            },
            minHealthyFraction: {
              type: "number",
              minimum: 0,
              maximum: 1,
            },
          },
        },
      },
    },
    retries: {
      type: "object",
      required: ["attempts"],
      additionalProperties: false,
      properties: {
        attempts: {
          type: "integer",
          minimum: 0,
          maximum: 10,
          description: "Retries after the first try (Envoy's num_retries); 0 disables retries.",
        },
        perTryTimeoutMs: {
          $ref: "#/$defs/timeoutMs",
        },
        retryOn: {
          type: "array",
          maxItems: 16,
          uniqueItems: true,
          items: {
            enum: [
              "5xx",
              "gateway-error",
              "reset",
              "connect-failure",
              "refused-stream",
              "retriable-status-codes",
              "timeout",
              "unavailable",
              "resource-exhausted",
            ],
          },
        },
        retriableStatusCodes: {
          type: "array",
          maxItems: 32,
          items: {
            type: "integer",
            minimum: 100,
            maximum: 599,
          },
        },
        budget: {
          type: "object",
          additionalProperties: false,
          properties: {
            ratio: {
              type: "number",
              minimum: 0,
              maximum: 1000,
            },
            minRetriesPerSecond: {
              type: "number",
              minimum: 0,
              maximum: 1000000,
            },
            windowMs: {
              type: "integer",
              minimum: 1000,
              maximum: 600000,
            },
          },
        },
      },
    },
    breaker: {
      type: "object",
      additionalProperties: false,
      description: "Per-instance circuit breaker thresholds (opossum's option names, in ms).",
      properties: {
        errorThresholdPercentage: {
          type: "number",
          minimum: 1,
          maximum: 100,
        },
        volumeThreshold: {
          type: "integer",
          minimum: 0,
          maximum: 1000000,
        },
        resetTimeoutMs: {
          type: "integer",
          minimum: 1,
          maximum: 600000,
        },
        rollingWindowMs: {
          type: "integer",
          minimum: 100,
          maximum: 600000,
        },
      },
    },
    outlierDetection: {
      type: "object",
      additionalProperties: false,
      description: "Envoy's outlier_detection, with times in ms.",
      properties: {
        consecutiveFailures: {
          type: "integer",
          minimum: 0,
          maximum: 1000,
        },
        intervalMs: {
          type: "integer",
          minimum: 100,
          maximum: 600000,
        },
        baseEjectionTimeMs: {
          type: "integer",
          minimum: 1,
          maximum: 3600000,
        },
        maxEjectionTimeMs: {
          type: "integer",
          minimum: 1,
          maximum: 3600000,
        },
        maxEjectionPercent: {
          type: "number",
          minimum: 0,
          maximum: 100,
        },
        successRate: {
          type: "object",
          additionalProperties: false,
          properties: {
            minimumHosts: {
              type: "integer",
              minimum: 1,
              maximum: 100000,
            },
            requestVolume: {
              type: "integer",
              minimum: 1,
              maximum: 1000000,
            },
            stdevFactor: {
              type: "number",
              minimum: 0,
              maximum: 100,
            },
          },
        },
        failurePercentage: {
          type: "object",
          additionalProperties: false,
          properties: {
            threshold: {
              type: "number",
              minimum: 0,
              maximum: 100,
            },
            minimumHosts: {
              type: "integer",
              minimum: 1,
              maximum: 100000,
            },
            requestVolume: {
              type: "integer",
              minimum: 1,
              maximum: 1000000,
            },
          },
        },
      },
    },
    rateLimit: {
      type: "object",
      required: ["requestsPerSecond"],
      additionalProperties: false,
      description: "A token bucket per calling process.",
      properties: {
        requestsPerSecond: {
          type: "number",
          exclusiveMinimum: 0,
          maximum: 1000000,
        },
        burst: {
          type: "integer",
          minimum: 1,
          maximum: 1000000,
          description: "Bucket size; defaults to requestsPerSecond rounded up.",
        },
      },
    },
  },
} as const;
