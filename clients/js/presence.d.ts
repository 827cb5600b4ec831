/** Presence bookkeeping (`presence.js`): members per channel from JOINED and PRESENCE. */

export interface Member {
  userId: string;
  connectionId: string;
  name?: string;
}

export declare class PresenceBook {
  /** Replace a channel's presence with a JOINED payload (`members` missing past the threshold). */
  reset(channel: string, members: Member[] | undefined, count: number): void;
  /** Apply a PRESENCE diff; false when the channel is not tracked. */
  apply(
    channel: string,
    joined: Member[] | undefined,
    left: Member[] | undefined,
    count: number | undefined,
  ): boolean;
  drop(channel: string): void;
  clear(): void;
  members(channel: string): Member[];
  count(channel: string): number;
}
