// A real OpenID provider for the tests (the npm package oidc-provider, pinned in
// package.json). Its configuration comes from the JSON file named on the command line:
// {"port": N, "clients": [...], "users": {"alice": {"groups": [...], "email": "..."}}}.
// Sign-in uses the package's development interactions (a login form, then a consent form):
// the login name is the account id; the password field is not checked.
import fs from 'node:fs';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${cfg.port}`;

const provider = new Provider(issuer, {
  clients: cfg.clients,
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email'],
    groups: ['groups'],
  },
  // The groups claim in the ID token itself, as Entra ID and Keycloak can be set to do.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['test-cookie-key-not-secret'] },
  async findAccount(ctx, id) {
    const user = cfg.users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, email: user.email, groups: user.groups };
      },
    };
  },
});

provider.listen(cfg.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
