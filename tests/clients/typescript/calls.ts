// Everyday calls to a crmgate through the client generated from the reference document
// (./generated, made by tests/test_generated_clients.py): every answer is parsed by zod against
// its response schema. Exits 1 listing each call whose answer did not parse or had another status.
import { client } from "./generated/client.gen";
import * as sdk from "./generated/sdk.gen";

type Json = Record<string, unknown>;
type Setup = {
  base_url: string;
  user_key: string;
  applications: Record<string, string>;
  // platform -> entity -> [a record to create, a change to make]
  records: Record<string, Record<string, [Json, Json]>>;
  create: { type: string; authorization: string; credential: Record<string, string> };
};

const setup = JSON.parse(process.env.CRMGATE_CALLS ?? "") as Setup;
client.setConfig({ baseUrl: `${setup.base_url}/v1` });
let lastBody = "";
client.interceptors.response.use(async (response) => {
  lastBody = await response.clone().text();
  return response;
});

const failures: string[] = [];
const user = { "X-API2CRM-USER-KEY": setup.user_key };

type Answer = { data?: unknown; response?: Response };

/** The parsed answer of one call, or undefined (written down) when it is not the expected one. */
async function ok<T>(name: string, status: number, call: () => Promise<T & Answer>) {
  let answer: T & Answer;
  try {
    answer = await call();
  } catch (error) {
    const issues = (error as { issues?: unknown }).issues;
    const why = issues ? JSON.stringify(issues) : String(error);
    failures.push(`${name}: unparsable answer, ${why.slice(0, 600)} in ${lastBody.slice(0, 400)}`);
    return undefined;
  }
  if (answer.response?.status !== status) {
    failures.push(`${name}: ${answer.response?.status}, not ${status}: ${lastBody.slice(0, 400)}`);
    return undefined;
  }
  return answer.data as T extends { data?: infer D } ? D : never;
}

async function applications() {
  const platforms = await ok("getPlatformCollection", 200, () =>
    sdk.getPlatformCollection({ headers: user }),
  );
  if (platforms && !platforms.some((p) => p.type === "Salesforce")) {
    failures.push("getPlatformCollection: no Salesforce");
  }
  const body = {
    type: setup.create.type as "Pipedrive",
    authorization: setup.create.authorization,
    credential: setup.create.credential,
    description: "Made by a generated TypeScript client",
  };
  const created = await ok("createApplicationEntity", 201, () =>
    sdk.createApplicationEntity({ headers: user, body }),
  );
  const key = created?.key ?? (JSON.parse(lastBody) as { key: string }).key;
  try {
    const listed = await ok("getApplicationCollection", 200, () =>
      sdk.getApplicationCollection({ headers: user, query: { page_size: 100 } }),
    );
    if (listed && !listed.some((a) => a.key === key)) {
      failures.push("getApplicationCollection: the new application is missing");
    }
    await ok("getApplicationEntity", 200, () =>
      sdk.getApplicationEntity({ headers: user, path: { key } }),
    );
    const renamed = { ...body, description: "Renamed by a generated TypeScript client" };
    await ok("updateApplicationEntity", 200, () =>
      sdk.updateApplicationEntity({ headers: user, path: { key }, body: renamed }),
    );
    const got = await ok("getApplicationEntity", 200, () =>
      sdk.getApplicationEntity({ headers: user, path: { key } }),
    );
    if (got && got.description !== renamed.description) {
      failures.push(`updateApplicationEntity: description is ${got.description}`);
    }
    await ok("getInternalUserCollection", 200, () =>
      sdk.getInternalUserCollection({ headers: user }),
    );
  } finally {
    await ok("deleteApplicationEntity", 204, () =>
      sdk.deleteApplicationEntity({ headers: user, path: { key } }),
    );
  }
}

// One entity's operations of the generated SDK, named alike (the options differ only in the
// name of the id's path parameter).
type Operations = {
  create: (options: any) => Promise<Answer>;
  get: (options: any) => Promise<Answer>;
  list: (options: any) => Promise<Answer>;
  count: (options: any) => Promise<Answer>;
  describe: (options: any) => Promise<Answer>;
  update: (options: any) => Promise<Answer>;
  remove: (options: any) => Promise<Answer>;
};

const ENTITIES: Record<string, Operations> = {
  contact: {
    create: sdk.createContactEntity,
    get: sdk.getContactEntity,
    list: sdk.getContactCollection,
    count: sdk.getContactCountCollection,
    describe: sdk.getContactDescribe,
    update: sdk.updateContactEntity,
    remove: sdk.deleteContactEntity,
  },
  account: {
    create: sdk.createAccountEntity,
    get: sdk.getAccountEntity,
    list: sdk.getAccountCollection,
    count: sdk.getAccountCountCollection,
    describe: sdk.getAccountDescribe,
    update: sdk.updateAccountEntity,
    remove: sdk.deleteAccountEntity,
  },
  opportunity: {
    create: sdk.createOpportunityEntity,
    get: sdk.getOpportunityEntity,
    list: sdk.getOpportunityCollection,
    count: sdk.getOpportunityCountCollection,
    describe: sdk.getOpportunityDescribe,
    update: sdk.updateOpportunityEntity,
    remove: sdk.deleteOpportunityEntity,
  },
};

async function entities(platform: string) {
  const headers = { ...user, "X-API2CRM-APPLICATION-KEY": setup.applications[platform] };
  await ok(`${platform} getUserCollection`, 200, () =>
    sdk.getUserCollection({ headers, query: { page_size: 2 } }),
  );
  for (const [entity, [record, change]] of Object.entries(setup.records[platform])) {
    const op = ENTITIES[entity];
    const name = (what: string) => `${platform} ${entity} ${what}`;
    const made = (await ok(name("create"), 201, () => op.create({ headers, body: record }))) as
      | { id?: string }
      | undefined;
    const id = made?.id ?? (JSON.parse(lastBody) as { id: string }).id;
    const path = { [`${entity}_id`]: id };
    await ok(name("get"), 200, () => op.get({ headers, path }));
    const pages = [];
    for (const page of [1, 2]) {
      pages.push(await ok(name(`list page ${page}`), 200, () =>
        op.list({ headers, query: { page_size: 2, page } }),
      ));
    }
    const [one, two] = pages as ({ id?: string }[] | undefined)[];
    if (one && two && (one.length !== 2 || !two.length || two.some((r) => one.some((s) => s.id === r.id)))) {
      failures.push(`${name("list")}: not two pages of two distinct records`);
    }
    await ok(name("count"), 200, () => op.count({ headers }));
    await ok(name("describe"), 200, () => op.describe({ headers }));
    await ok(name("update"), 200, () => op.update({ headers, path, body: change }));
    await ok(name("delete"), 204, () => op.remove({ headers, path }));
  }
}

await applications();
for (const platform of Object.keys(setup.records)) {
  await entities(platform);
}
if (failures.length) {
  console.error(`${failures.length} call(s) failed:\n${failures.join("\n")}`);
  process.exit(1);
}
console.log("every answer parsed");
